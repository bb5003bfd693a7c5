"""Sweeps on a real local Ray instance, and the team store: an MLflow server on a real
PostgreSQL, receiving every run of a `dvc repro` and of sweeps, through a worker killed mid-trial
and a server killed mid-sweep."""

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import ROOT, env_for_stages, mlflow_runs, run, set_params
from servers import MlflowServer, postgres, postgres_bin
from sel.core.errors import SelError
from sel.scale.sweep import load_grid, plan


def write_grid(repo: Path, grid: dict) -> Path:
    path = repo / f"{grid['name']}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def sweep(repo: Path, grid: Path, *args, env=None, check=True, timeout=900) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "sel.scale.sweep", str(grid), *args], repo, check=check,
               env=env or env_for_stages(), timeout=timeout)


def start_sweep(repo: Path, grid: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sel.scale.sweep", str(grid), *args], cwd=repo,
                            env=env or env_for_stages(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(proc: subprocess.Popen, marker: str) -> str:
    """What `proc` printed up to the first line holding `marker`."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"no line with {marker!r}:\n{''.join(lines)}")


def wait_for_checkpoint(repo: Path, experiment: str, proc: subprocess.Popen, timeout=300) -> None:
    deadline = time.monotonic() + timeout
    while not list((repo / "checkpoints").glob(f"{experiment}-seed42-*.pt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)


# The tests that start a local Ray run on one pytest-xdist worker, one after another: every local
# Ray shares the host's /tmp/ray (its session_latest link, its cache of ports), and one Ray's
# workers (a sweep of 4 trials at once) would crowd another's, whose trials must overlap.
one_ray_at_a_time = pytest.mark.xdist_group("ray")


def training_process(driver: subprocess.Popen, experiment: str) -> psutil.Process:
    """The `pipeline.train` process training `experiment` for this sweep's driver (a trial's step):
    only its descendants, never a process of another sweep or test on the same machine."""
    for p in psutil.Process(driver.pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "pipeline.train" in cmd and experiment in cmd:
            return p
    raise AssertionError(f"no training process of {experiment}")


def assert_each_trial_once_finished(client, runs: list, epochs: int | None = None) -> None:
    trials = [r.data.tags["sweep.trial"] for r in runs]
    assert len(trials) == len(set(trials)), trials
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        if epochs:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "acc/test_full")]
            assert sorted(steps) == list(range(1, epochs + 1)), (r.info.run_name, steps)


@one_ray_at_a_time
def test_a_grid_runs_on_two_ray_workers_once_and_a_rerun_runs_nothing(project):
    """A second driver of the same sweep, started while the first runs, is refused in one line
    (no trial trained twice); a rerun of the finished sweep logs into its one aggregate run."""
    # runs of several seconds each, so that two workers' runs overlap however their start-ups differ
    grid = write_grid(project, {"name": "tiny", "experiments": ["baseline", "sel95"], "seeds": [42, 43],
                                "base": {"experiments.baseline.epochs": 6, "sel.epochs_per_stage": 2},
                                "grid": {"sel.gamma_decay": [0.3]}})
    first = start_sweep(project, grid, "--workers", "2")
    out = read_until(first, "sweep tiny: ")  # its folder laid out and locked, the trials submitted
    second = sweep(project, grid, "--workers", "2", check=False, timeout=300)
    assert second.returncode == 2, second.stdout + second.stderr
    assert "sweep tiny is running in another process (it holds " in second.stderr
    assert "sweeps/tiny/driver.lock" in second.stderr and second.stderr.strip().count("\n") == 0
    out += first.communicate(timeout=900)[0]
    assert first.returncode == 0, out
    assert "4 trials, 4 distinct runs, 0 already finished, 4 to run" in out
    assert sum(line.startswith(("[1/4]", "[2/4]", "[3/4]", "[4/4]")) for line in out.splitlines()) == 4
    assert "left ~" in out

    client, runs = mlflow_runs(project)
    trial_runs = runs["baseline"] + runs["sel95"]
    assert len(trial_runs) == 4 and {r.data.tags["sweep"] for r in trial_runs} == {"tiny"}
    assert_each_trial_once_finished(client, trial_runs)
    assert json.loads(runs["sel95"][0].data.tags["sweep.overrides"]) == {"sel.gamma_decay": 0.3}
    assert json.loads(runs["baseline"][0].data.tags["sweep.overrides"]) == {}  # reads no SEL knob
    spans = sorted((r.info.start_time, r.info.end_time) for r in trial_runs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans  # two workers: trials overlap

    summary = json.loads((project / "sweeps" / "tiny" / "summary.json").read_text())
    (point,) = summary["points"]
    assert point["overrides"] == {"sel.gamma_decay": 0.3}
    assert {e["experiment"]: e["metrics"]["acc/test_full"]["n"] for e in point["experiments"]} == \
        {"baseline": 2, "sel95": 2}
    _, aggregates = mlflow_runs(project, "sel-benchmark-aggregate")
    (agg,) = aggregates["aggregate"]
    assert agg.info.run_name == "sweep:tiny" and "test_full/p0.sel95.mean" in agg.data.metrics

    again = sweep(project, grid, "--workers", "2")
    assert "4 already finished, 0 to run" in again.stdout
    _, runs = mlflow_runs(project)
    assert len(runs["baseline"] + runs["sel95"]) == 4
    _, aggregates = mlflow_runs(project, "sel-benchmark-aggregate")
    (agg_again,) = aggregates["aggregate"]
    assert agg_again.info.run_id == agg.info.run_id and agg_again.info.status == "FINISHED"
    assert agg_again.data.metrics == agg.data.metrics


@one_ray_at_a_time
def test_a_worker_killed_mid_trial_runs_it_again_from_its_checkpoint_into_the_same_run(project):
    epochs = 12
    grid = write_grid(project, {"name": "kill", "experiments": ["baseline"], "seeds": [42],
                                "base": {"experiments.baseline.epochs": epochs}})
    proc = start_sweep(project, grid, "--workers", "1")
    wait_for_checkpoint(project, "baseline", proc)
    trainer = training_process(proc, "baseline")
    trainer.parent().send_signal(signal.SIGKILL)  # the Ray worker; its step dies with it
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    log = next((project / "sweeps" / "kill" / "trials").glob("baseline-*/log.txt")).read_text()
    assert "resuming after epoch" in log
    client, runs = mlflow_runs(project)
    assert_each_trial_once_finished(client, runs["baseline"], epochs)


@one_ray_at_a_time
@pytest.mark.skipif(postgres_bin() is None and not os.environ.get("SEL_REQUIRE_POSTGRES"),
                    reason="PostgreSQL not installed (.ci/run installs Debian's postgresql)")
@pytest.mark.fresh_store  # asserts that no local store is made
def test_a_team_server_on_postgresql_takes_every_run_and_an_outage_loses_none(project, tmp_path):
    set_params(project, {"train_stages": {"dense": ["baseline"], "sel": ["sel95"], "budget": [], "measured": []}})
    with postgres() as database:
        server = MlflowServer(database, tmp_path / "artifacts").start()
        env = {**env_for_stages(), "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        try:
            from mlflow import MlflowClient

            client = MlflowClient(server.uri)

            def runs_of(experiment="sel-benchmark", sweep_name=None):
                found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
                return [r for r in found if r.data.tags.get("sweep") == sweep_name]

            run(["dvc", "repro"], project, env=env)
            assert {(r.info.run_name, r.info.status) for r in runs_of()} == {("baseline@42", "FINISHED"),
                                                                            ("sel95@42", "FINISHED")}
            assert [r.info.run_name for r in runs_of("sel-benchmark-aggregate")] == ["aggregate"]
            assert not (project / "mlflow.db").exists()

            # four trials writing to the store at once
            grid = write_grid(project, {"name": "four", "experiments": ["baseline"], "seeds": [42, 43, 44, 45]})
            out = sweep(project, grid, "--workers", "4", env=env)
            assert "database is locked" not in out.stdout + out.stderr
            assert len(runs_of(sweep_name="four")) == 4
            assert_each_trial_once_finished(client, runs_of(sweep_name="four"))

            # the server killed mid-sweep: trials fail in one line, a rerun completes the rest
            epochs = 10
            grid = write_grid(project, {"name": "outage", "experiments": ["baseline"], "seeds": [42, 43],
                                        "base": {"experiments.baseline.epochs": epochs}})
            proc = start_sweep(project, grid, "--workers", "2", env=env)
            wait_for_checkpoint(project, "baseline", proc)
            server.stop()
            out = proc.communicate(timeout=600)[0]
            assert proc.returncode == 2, out
            assert f"lost the MLflow tracking store {server.uri}" in out or "cannot reach" in out, out
            assert "Traceback" not in out.split("sweep outage:")[-1]
            server.start()
            again = sweep(project, grid, "--workers", "2", env=env)
            assert "already finished" in again.stdout
            done = runs_of(sweep_name="outage")
            assert len(done) == 2
            assert_each_trial_once_finished(client, done, epochs)
            assert len(runs_of(sweep_name="four")) == 4  # nothing recorded before was lost
        finally:
            server.stop()


@pytest.mark.parametrize("grid, says", [
    ({"name": "x", "grid": {"calibrate.percentile": [40, 100]}}, "point {'calibrate.percentile': 100}: params: "
                                                                 "calibrate.percentile = 100"),
    ({"name": "x", "grid": {"sel.gama_decay": [0.1]}}, "unknown key 'sel.gama_decay'"),
    ({"name": "x", "experiments": ["nope"]}, "experiment 'nope' is not in train_stages"),
    ({"name": "x", "grid": {"sel.gamma_decay": 0.1}}, "grid axis 'sel.gamma_decay' needs a non-empty list"),
    ({"name": "x", "seeds": ["a"]}, "`seeds` must be a non-empty list of integers from 0 to 2**32 - 1"),
    ({"name": ".."}, "grid.yaml: name: '..' is not a valid name: use 1-64 letters"),  # sweeps/..: the project
    ({"name": "x", "grids": {}}, "unknown key 'grids'"),
])
def test_a_bad_grid_is_refused_in_one_line_before_any_work(project, grid, says):
    path = project / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = sweep(project, path, check=False)
    assert out.returncode == 2 and says in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and not (project / "sweeps").exists()


@pytest.mark.parametrize("grid, says", [
    ({"experiments": []}, "`experiments` must be a non-empty list of experiment names"),
    ({"seeds": []}, "`seeds` must be a non-empty list of integers from 0 to 2**32 - 1"),
    ({"experiments": "baseline"}, "`experiments` must be a non-empty list of experiment names"),
    ({"experiments": None}, "`experiments` must be a non-empty list of experiment names"),
    ({"seeds": 42}, "`seeds` must be a non-empty list of integers from 0 to 2**32 - 1"),
    ({"seeds": [True]}, "`seeds` must be a non-empty list of integers from 0 to 2**32 - 1"),
    ({"grid": {"train.lr": []}}, "grid axis 'train.lr' needs a non-empty list of values"),
    ({"grid": ["train.lr"]}, "`grid` must be a mapping of axes"),
    ({"base": ["train.lr=0.1"]}, "`base` must be a mapping of overrides"),
    ({"protocol": ["cpu-seeds"]}, "`protocol` must be the name of a protocol"),
])
def test_an_empty_or_mistyped_list_is_refused_in_one_line_naming_its_key(tmp_path, grid, says):
    """An empty list would plan nothing or fall back to a default unasked; a string where a list
    goes would be read letter by letter."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "x", **grid}))
    with pytest.raises(SelError, match=re.escape(says)) as refused:
        load_grid(path)
    assert "\n" not in str(refused.value)


def test_an_empty_grid_is_one_point_and_planning_writes_nothing(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    trials = plan({"name": "x", "grid": {}, "experiments": ["baseline"], "seeds": [42]}, raw, tmp_path)
    assert [(t.experiment, t.seed, t.point) for t in trials] == [("baseline", 42, {})]
    assert list(tmp_path.iterdir()) == []  # folders are laid out under the sweep's lock

def test_a_sweeps_aggregate_run_is_reopened_or_replaced_when_its_points_changed(tmp_path, monkeypatch):
    from sel.scale.sweep_report import open_sweep_run
    from sel.track.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    tracker = Tracker("x-aggregate", uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    def opened(points: str) -> str:
        open_sweep_run(tracker, "s", {"point.p0": points}, {"sweep": "s"})
        tracker.finish()
        return tracker.run_id

    first = opened("{}")
    assert opened("{}") == first
    changed = opened('{"train.lr": 0.1}')  # MLflow keeps a param's first value: a new run
    assert changed != first
    assert [r.info.run_id for r in tracker.client.search_runs([tracker.experiment_id])] == [changed]


# Every TCP socket listening, and UDP socket bound, in the processes of the local Ray a sweep
# starts (gcs_server and raylet are the driver's children; workers and agents the raylet's),
# gathered for a few seconds after a task ran, so that agents that start late count too.
RAY_LISTENERS = """
import json, os, time
import psutil
from sel.scale.sweep import _connect

ray = _connect(None, 1)
ray.get(ray.remote(lambda: os.getpid()).remote())
found = set()
for _ in range(5):
    for p in psutil.Process().children(recursive=True) + [psutil.Process()]:
        for c in p.net_connections("inet"):
            if c.status == psutil.CONN_LISTEN or (c.type.name == "SOCK_DGRAM" and not c.raddr):
                found.add((p.name(), c.laddr.ip, c.laddr.port))
    time.sleep(1)
print(json.dumps(sorted(found)))
"""


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback  # ::ffff:127.0.0.1 too


@one_ray_at_a_time
@pytest.mark.slow  # starts a real Ray
def test_a_local_sweeps_ray_listens_on_loopback_only():
    out = run([sys.executable, "-c", RAY_LISTENERS], ROOT, timeout=300)
    listeners = [tuple(x) for x in json.loads(out.stdout.strip().splitlines()[-1])]
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in listeners}, listeners
    assert all(loopback(ip) for _, ip, _ in listeners), listeners


def test_a_local_ray_is_refused_when_ray_was_imported_too_early_to_keep_it_on_loopback():
    from ray.util import get_node_ip_address

    if loopback(get_node_ip_address()):
        pytest.skip("this machine has no network address for Ray to listen on")
    env = {k: v for k, v in env_for_stages().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    out = run([sys.executable, "-c", "import ray; from sel.scale.sweep import _connect; _connect(None, 1)"], ROOT,
              check=False, env=env, timeout=120)
    assert "not on loopback only: ray was imported before sel.scale.sweep set" in out.stderr, out.stderr
