"""Checkpoints: a damaged or foreign file is never resumed from, a finished stage leaves nothing
behind, and no writer deletes the temporary files of another process still writing them."""

import fcntl
import subprocess

import pytest
import torch

from sel import files
from sel.checkpoint import Checkpoint
from sel.files import write_json


def state(done: int = 3) -> dict:
    trainer = {"model": {"w": torch.arange(2048.0)}, "optimizer": {"state": {}}, "mask": None,
               "generator": torch.zeros(16, dtype=torch.uint8), "torch_rng": torch.get_rng_state()}
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
