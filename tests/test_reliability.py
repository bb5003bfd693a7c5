"""Reliability on tiny data: a training killed with SIGKILL resumes into the same MLflow run and
ends as an uninterrupted one; a NaN loss, Ctrl-C and an unreachable tracking server are
reported and recorded; two queued experiments run in parallel on the SQLite store."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from builders import make_arrays, write_class_folder_tar
from conftest import env_for_stages, git_commit, mlflow_runs, run, set_params
from servers import closed_port

# enough images that an epoch takes a moment, so the kill lands mid-epoch; the lottery is killed
# in its second masked epoch (after the prune and one masked epoch), two masked epochs still to run
LONGER = {"experiments": {"lottery": {"pretrain_epochs": 1, "epochs": 3}},
          "sel": {"epochs_per_stage": 1}}


@pytest.fixture
def longer_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("longer") / "longer.tar.gz"
    return write_class_folder_tar(path, make_arrays(40, 6))


def named_runs(repo, name):
    client, by_name = mlflow_runs(repo)
    return client, by_name.get(name, [])


def checkpoint_done(repo) -> int:
    """Epochs finished according to the checkpoint on disk (-1 while there is none)."""
    files = list((repo / "checkpoints").glob("*.pt"))
    if not files:
        return -1
    try:
        return torch.load(files[0], weights_only=True)["run"]["done"]
    except Exception:  # being replaced right now
        return -1


def start(cmd, repo):
    """`cmd` in a session of its own, with SIGINT at its default, as a user's shell starts it,
    whatever disposition this test process inherited (an ignored SIGINT is inherited through
    exec, and Python then never raises KeyboardInterrupt)."""
    return subprocess.Popen(cmd, cwd=repo, env=env_for_stages(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, timeout=240, what="condition", poll=0.05):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


@pytest.mark.parametrize("experiment, kill_after", [("lottery", 2), ("sel95", 2), ("baseline", 0)])
def test_sigkill_mid_epoch_resumes_into_the_same_run(project, longer_source, experiment, kill_after):
    set_params(project, {"data": {"source": str(longer_source)}, **LONGER,
                         "experiments": {**LONGER["experiments"], "baseline": {"epochs": 2}}})
    git_commit(project, "longer")
    dense = experiment in ("baseline", "lottery")
    stage = f"train_{'dense' if dense else 'sel'}@{experiment}-42"
    # what the stage reads, prepared first, so the kill lands in training (the dense runs read
    # neither the pools nor gamma)
    run(["dvc", "repro", "download"] + ([] if dense else ["sort@42", "calibrate@42"]), project)

    proc = start(["dvc", "repro", stage], project)
    wait_for(lambda: checkpoint_done(project) >= kill_after or proc.poll() is not None, what="checkpoint")
    assert proc.poll() is None, "training ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage, no chance to clean up
    proc.wait()

    client, (killed,) = named_runs(project, experiment)
    assert killed.info.status == "RUNNING"  # never told it was stopped
    assert not (project / "metrics" / "runs" / experiment / "seed42" / "history.csv").exists()

    resumed = run(["dvc", "repro", stage], project)
    assert "resuming after epoch" in resumed.stderr + resumed.stdout
    client, (final,) = named_runs(project, experiment)
    assert final.info.run_id == killed.info.run_id and final.info.status == "FINISHED"
    history = pd.read_csv(project / "metrics" / "runs" / experiment / "seed42" / "history.csv")
    epochs = list(range(1, len(history) + 1))
    assert list(history["epoch"]) == epochs
    for key in ("acc/test_full", "loss/train_loss", "sparsity/sparsity", "E/cat"):
        assert sorted(m.step for m in client.get_metric_history(final.info.run_id, key)) == epochs, key
    assert not list((project / "checkpoints").glob("*.pt"))  # a finished stage leaves none

    # the same stage again, never interrupted, on the same prepared data
    run(["dvc", "repro", "--force", "--single-item", stage], project)
    expected = pd.read_csv(project / "metrics" / "runs" / experiment / "seed42" / "history.csv")
    clocks = ["compute/time_s", "compute/train_time_s"]
    pd.testing.assert_frame_equal(history.drop(columns=clocks), expected.drop(columns=clocks))


def test_nan_loss_stops_the_run_naming_experiment_epoch_and_step(project):
    set_params(project, {"train": {"lr": 1e30}})
    out = run(["dvc", "repro", "train_dense@baseline-42"], project, check=False)
    assert out.returncode != 0
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "baseline@42: the loss became NaN or infinite at epoch 1" in line[0], out.stderr
    assert ", step " in line[0] and "train.lr" in line[0]
    _, (failed,) = named_runs(project, "baseline")
    assert failed.info.status == "FAILED"
    assert not (project / "metrics" / "runs" / "baseline").exists()


def test_ctrl_c_marks_the_run_killed_and_keeps_the_checkpoint(project, longer_source):
    # far more epochs than run before the interrupt, so that a fast machine cannot finish first
    # (the run stops at the interrupt: the extra epochs cost nothing)
    set_params(project, {"data": {"source": str(longer_source)}, **LONGER,
                         "experiments": {"lottery": {"pretrain_epochs": 2, "epochs": 200}}})
    run(["dvc", "repro", "download"], project)
    proc = start([sys.executable, "-m", "pipeline.train", "dense", "lottery", "42"], project)
    wait_for(lambda: checkpoint_done(project) >= 1 or proc.poll() is not None, what="checkpoint")
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert output.strip().splitlines()[-1].startswith("interrupted")
    _, (killed,) = named_runs(project, "lottery")
    assert killed.info.status == "KILLED"
    assert checkpoint_done(project) >= 1


@pytest.mark.unprepared  # no data yet: none may appear
def test_unreachable_tracking_server_fails_before_any_work(project):
    with closed_port() as port:
        uri = f"http://127.0.0.1:{port}"
        env = {**env_for_stages(), "MLFLOW_TRACKING_URI": uri}
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "pipeline.train", "sel", "sel95", "42"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, no traceback
    assert f"cannot reach the MLflow tracking store {uri}" in out.stderr
    assert "unset MLFLOW_TRACKING_URI" in out.stderr
    assert time.monotonic() - started < 60
    assert not (project / "data").exists() and not (project / "metrics").exists()


@pytest.mark.parametrize("typo, named", [({"data": {"train_per_clas": 3}}, "data.train_per_clas"),
                                         ({"sede": 1}, "sede")])
def test_a_mistyped_key_no_stage_reads_stops_dvc_repro_before_any_work(project, typo, named):
    run(["dvc", "repro", "download"], project)  # up to date: a key no stage lists changes none of them
    set_params(project, typo)
    out = run(["dvc", "repro", "download"], project, check=False)
    assert out.returncode != 0
    assert f"error: params: unknown key '{named}'" in out.stdout + out.stderr


@pytest.mark.fresh_store  # the queued stages create the store side by side
def test_two_queued_experiments_run_in_parallel_on_sqlite(project):
    set_params(project, {"train_stages": {"dense": ["baseline"], "sel": ["sel95"], "budget": [], "measured": []}})
    git_commit(project, "two experiments")
    for decay in ("0.1", "0.2"):
        run(["dvc", "exp", "run", "--queue", "-S", f"sel.gamma_decay={decay}"], project)
    run(["dvc", "queue", "start", "-j", "2"], project)

    def finished():
        status = run(["dvc", "queue", "status"], project).stdout
        return "Queued" not in status and "Running" not in status and status.count("Success") == 2

    try:
        wait_for(finished, timeout=600, what="the queue", poll=5)
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, check=False)
    status = run(["dvc", "queue", "status"], project).stdout
    assert "Failed" not in status, status
    client, by_name = mlflow_runs(project)
    runs = [r for group in by_name.values() for r in group]
    assert {k: len(v) for k, v in by_name.items()} == {"baseline": 2, "sel95": 2}
    _, aggregates = mlflow_runs(project, "sel-benchmark-aggregate")
    assert [r.info.status for r in aggregates["aggregate"]] == ["FINISHED"] * 2
    for r in runs:
        assert r.info.status == "FINISHED"
        if r.data.tags["experiment"] == "sel95":
            assert len(client.get_metric_history(r.info.run_id, "acc/test_full")) == 5
    decays = sorted(r.data.params["sel.gamma_decay"] for r in by_name["sel95"])
    assert decays == ["0.1", "0.2"]
