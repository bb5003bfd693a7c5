"""Checkpoints: a damaged or foreign file, or one whose state does not load, is never resumed
from but set aside, the MLflow run it names left to its owner; a finished stage leaves nothing
behind, and no writer deletes the temporary files of another process still writing them."""

import fcntl
import shutil
import subprocess

import numpy as np
import pytest
import torch

from builders import make_arrays
from sel.experiments.stage import open_run
from sel.core import files
from sel.train.checkpoint import FORMAT, Checkpoint, _seal
from sel.data.dataset import Cifar, held_out_indices
from sel.experiments.plan import ExperimentRun, Phase
from sel.core.files import write_json
from sel.config.params import ModelParams
from sel.train.model import fresh_model
from sel.track.tracking import Tracker
from sel.train.training import Trainer

DATA = Cifar(*make_arrays(4, 2))


def state(done: int = 3) -> dict:
    trainer = {"model": {"w": torch.arange(2048.0)}, "optimizer": {"state": {}}, "mask": None,
               "generator": torch.zeros(16, dtype=torch.uint8), "torch_rng": torch.get_rng_state(),
               "class_e": torch.ones(10), "scores": torch.ones(40)}
    return {"mlflow_run_id": "run-1",
            "run": {"done": done, "rows": [{"epoch": 1}], "totals": {"time_s": 1.0}, "trainer": trainer}}


def checkpoint(folder) -> Checkpoint:
    return Checkpoint("exp-seed1", {"lr": 0.1}, [], folder=folder)


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_saved_state_loads_back(tmp_path):
    ck = checkpoint(tmp_path)
    ck.save(state())
    loaded = ck.load(torch.device("cpu"))
    assert loaded["run"]["done"] == 3
    assert torch.equal(loaded["run"]["trainer"]["model"]["w"], torch.arange(2048.0))
    assert torch.load(ck.path, weights_only=True)["run"]["done"] == 3  # still a plain torch file


def test_flipped_bytes_are_not_resumed_from(tmp_path, capsys):
    ck = checkpoint(tmp_path)
    ck.save(state())
    data = bytearray(ck.path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    ck.path.write_bytes(bytes(data))

    assert ck.load(torch.device("cpu")) is None
    err = capsys.readouterr().err
    assert str(ck.path) in err and "checksum mismatch" in err and err.count("\n") == 1
    assert not ck.path.exists()  # a rerun starts afresh without the message again


@pytest.mark.parametrize("bad, missing", [
    ({"mlflow_run_id": "run-1", "run": {"done": 1}}, "run.rows"),
    ({**state(), "run": {**state()["run"], "trainer": [1, 2]}}, "run.trainer.model"),
])
def test_a_loadable_state_of_another_shape_is_not_resumed_from(tmp_path, capsys, bad, missing):
    ck = checkpoint(tmp_path)
    ck.save(bad)

    assert ck.load(torch.device("cpu")) is None
    err = capsys.readouterr().err
    assert str(ck.path) in err and repr(missing) in err and err.count("\n") == 1
    assert not ck.path.exists()


def test_a_finished_stage_leaves_no_file_behind(tmp_path):
    ck = checkpoint(tmp_path)
    ck.save(state(1))
    ck.save(state(2))
    ck.remove()
    assert list(tmp_path.iterdir()) == []

    again = checkpoint(tmp_path)  # the configuration can be trained, and locked, once more
    assert again.path is not None and checkpoint(tmp_path).path is None
    again.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_unlinked_while_being_locked_is_locked_afresh(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    flock, calls = fcntl.flock, []

    def finisher_unlinks_first(f, op):  # the finishing holder unlinks it just before our flock
        calls.append(op)
        if len(calls) == 1:
            path.unlink()
        return flock(f, op)

    monkeypatch.setattr(fcntl, "flock", finisher_unlinks_first)
    held = files.locked(path)
    assert len(calls) == 2 and files._same_file(held, path)
    held.close()


def test_checkpoint_partials_of_dead_writers_go_and_of_live_ones_stay(tmp_path, dead_pid, live_pid):
    first = checkpoint(tmp_path)
    name = first.path.name
    first.remove()
    (tmp_path / f"{name}.partial-{dead_pid}").write_bytes(b"half")
    (tmp_path / f"{name}.partial-{live_pid}").write_bytes(b"half")

    checkpoint(tmp_path).remove()  # clears up after it opens
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.partial-{live_pid}"]


def test_output_partials_of_dead_writers_go_and_of_live_ones_stay(tmp_path, dead_pid, live_pid):
    (tmp_path / f".out.json.partial-{dead_pid}").write_text("{")
    (tmp_path / f".out.json.partial-{live_pid}").write_text("{")

    write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.json.partial-{live_pid}", "out.json"]


def tiny_run(name: str, width: int = 8, lr: float = 1e-3) -> ExperimentRun:
    """`name` at seed 42: one dense epoch on 40 images."""
    trainer = Trainer(fresh_model(42, ModelParams(width=width, pretrained=False), 10), DATA, held_out_indices(DATA.y_test, 1, 10),
                      device=torch.device("cpu"), precision="fp32", lr=lr, batch_size=16, eval_batch_size=64,
                      seed=42)
    phase = Phase("dense", 1, np.arange(len(DATA.y_train)), stage=0)
    return ExperimentRun(f"{name}@42", trainer, [phase], DATA.classes, out=None)


def losses(run: ExperimentRun) -> list[float]:
    return [row["loss/train_loss"] for row in run.rows]


@pytest.fixture(scope="module")
def fresh_losses() -> list[float]:
    """baseline's history trained afresh, as if no checkpoint had been there."""
    run = tiny_run("baseline")
    run.run()
    return losses(run)


@pytest.fixture
def tracker(tmp_path, migrated_store):
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    return Tracker("x", f"sqlite:///{tmp_path / 'mlflow.db'}")


def interrupted(tracker: Tracker, checkpoint: Checkpoint, run: ExperimentRun, dead_pid: int) -> str:
    """`run` killed after its epoch, before its stage finished: its state saved to `checkpoint`,
    its MLflow run left RUNNING by a process now gone. Returns that run's id."""
    tracker.start(run.name, {}, {"experiment": run.name.split("@")[0], "seed": 42})
    run.step()
    tracker.log_metrics({"acc/test_full": run.rows[0]["acc/test_full"]}, step=1)
    checkpoint.save({"run": run.state_dict(), "mlflow_run_id": tracker.run_id})
    tracker.client.set_tag(tracker.run_id, "sel.pid", dead_pid)
    return tracker.run_id


def start_baseline(tracker: Tracker, checkpoint: Checkpoint) -> ExperimentRun:
    """baseline's run opened as the training stage opens it, asserting that it starts afresh."""
    run = tiny_run("baseline")
    assert not open_run(tracker, run, checkpoint, run.name, {}, {"experiment": "baseline", "seed": 42})
    assert run.done == 0 and run.rows == []
    return run


def assert_set_aside(path, payload: bytes, err: str, *words: str) -> None:
    """One line naming the file and why; the file moved, byte for byte, to rejected/."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in (str(path), *words):
        assert word in err, (word, err)
    assert not path.exists() and (path.parent / "rejected" / path.name).read_bytes() == payload


def test_a_checkpoint_of_another_experiment_is_set_aside_and_its_run_left_alone(tmp_path, tracker, dead_pid,
                                                                                  fresh_losses, capsys):
    """sel95's file copied over baseline's name: baseline starts afresh into a run of its own,
    and sel95's run (RUNNING, its process gone) is not re-tagged, resumed or ended."""
    foreign = Checkpoint("sel95-seed42", {"width": 8}, [], folder=tmp_path / "checkpoints")
    sel95_id = interrupted(tracker, foreign, tiny_run("sel95", lr=1e-2), dead_pid)
    sel95_before = tracker.client.get_run(sel95_id)
    ours = Checkpoint("baseline-seed42", {"width": 8}, [], folder=tmp_path / "checkpoints")
    shutil.copy(foreign.path, ours.path)
    path, payload = ours.path, ours.path.read_bytes()
    capsys.readouterr()

    baseline = start_baseline(tracker, ours)
    assert_set_aside(path, payload, capsys.readouterr().err, "sel95-seed42", "not baseline-seed42")
    baseline.run()
    tracker.finish()
    assert losses(baseline) == fresh_losses  # none of sel95's history
    sel95 = tracker.client.get_run(sel95_id)
    assert (sel95.info.status, sel95.data.tags, sel95.data.metrics) == \
        ("RUNNING", sel95_before.data.tags, sel95_before.data.metrics)
    assert tracker.run_id != sel95_id
    assert tracker.client.get_run(tracker.run_id).data.tags["experiment"] == "baseline"


@pytest.mark.parametrize("how", ["copied", "saved"])
def test_a_checkpoint_of_another_width_is_set_aside_and_the_run_starts_afresh(tmp_path, tracker, dead_pid,
                                                                               fresh_losses, capsys, how):
    """A width-4 state where width 8 trains: copied from the width-4 configuration (whose
    digest is not this one's), or saved under this configuration's own name (by a library whose
    fingerprint missed a change, say), where it fails to load, and loads nothing. Either way one
    line, the file set aside, the run trained as if no file had been there, and the width-4 run,
    this experiment's and seed's, whose process is gone, not left RUNNING."""
    folder = tmp_path / "checkpoints"
    ours = Checkpoint("baseline-seed42", {"width": 8}, [], folder=folder)
    if how == "copied":
        narrow = Checkpoint("baseline-seed42", {"width": 4}, [], folder=folder)
        interrupted(tracker, narrow, tiny_run("baseline", width=4), dead_pid)
        shutil.copy(narrow.path, ours.path)
    else:
        interrupted(tracker, ours, tiny_run("baseline", width=4), dead_pid)
    path, payload = ours.path, ours.path.read_bytes()
    capsys.readouterr()

    baseline = start_baseline(tracker, ours)
    words = ["not baseline-seed42"] if how == "copied" else ["does not load", "size mismatch"]
    assert_set_aside(path, payload, capsys.readouterr().err, *words)
    assert all(torch.equal(v, baseline.trainer.initial_state[k])  # nothing half-loaded
               for k, v in baseline.trainer.model.state_dict().items())
    baseline.run()
    tracker.finish()
    assert losses(baseline) == fresh_losses
    statuses = sorted(r.info.status for r in tracker.client.search_runs([tracker.experiment_id]))
    assert statuses == ["FINISHED", "KILLED"]


def test_a_forged_checkpoint_naming_another_seeds_run_starts_a_new_run(tmp_path, tracker, dead_pid, capsys):
    """Seed 42's checkpoint whose owner and MLflow run id were rewritten to seed 43's run and
    re-sealed (the seal proves bytes intact, not who made them): the stage resumes its state but
    not that run, which keeps its steps and tags; seed 42 gets a run of its own, said in one line."""
    folder = tmp_path / "checkpoints"
    other = tiny_run("baseline")
    other_id = tracker.start("baseline@43", {}, {"experiment": "baseline", "seed": 43})
    other.step()
    tracker.log_metrics({"acc/test_full": other.rows[0]["acc/test_full"]}, step=1)
    tracker.client.set_tag(other_id, "sel.pid", dead_pid)
    before = tracker.client.get_run(other_id)
    ours = Checkpoint("baseline-seed42", {"width": 8}, [], folder=folder)
    torch.save({"run": other.state_dict(), "mlflow_run_id": other_id, "owner": ours.owner, "format": FORMAT},
               ours.path)
    _seal(ours.path)
    capsys.readouterr()

    run = tiny_run("baseline")
    assert open_run(tracker, run, ours, run.name, {}, {"experiment": "baseline", "seed": 42})
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and other_id in err and "seed 43" in err, err
    run.run()
    tracker.finish()
    after = tracker.client.get_run(other_id)
    assert (after.info.status, after.data.tags) == (before.info.status, before.data.tags)
    assert len(tracker.client.get_metric_history(other_id, "acc/test_full")) == 1
    assert tracker.run_id != other_id
    assert tracker.client.get_run(tracker.run_id).data.tags["seed"] == "42"
