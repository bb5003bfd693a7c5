"""Fixtures shared by the tests that run the pipeline for real: a copy of the project in a
temporary git + DVC repository, configured by params overrides alone."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builders import make_arrays, write_class_folder_tar
from sel.core.errors import SelError

ROOT = Path(__file__).resolve().parents[1]

# Under pytest-xdist the workers share the cores, as sel.scale.parallel's jobs do: torch's threads
# in each worker and in the processes its tests start, else they busy-wait on each other's cores
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@contextlib.contextmanager
def refused(*messages: str):
    """Expects the block to raise a one-line SelError that contains each of `messages`."""
    with pytest.raises(SelError) as e:
        yield
    assert all(m in str(e.value) for m in messages) and "\n" not in str(e.value), str(e.value)


PROJECT_FILES = ["sel", "pipeline", "params.yaml", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config",
                 ".dvc/.gitignore", ".dvc/plots"]

TINY = {
    "data": {"train_per_class": None, "test_per_class": None, "held_out_per_class": 3},
    "model": {"width": 8, "pretrained": False},
    "train": {"batch_size": 32, "eval_batch_size": 64},
    "calibrate": {"batch_size": 32, "mode": "train"},
    "sel": {"epochs_per_stage": 1},
    "experiments": {"baseline": {"epochs": 1}, "lottery": {"pretrain_epochs": 1, "epochs": 1},
                    "warmup_sel": {"warmup_epochs": 1, "warmup_per_class": 4},
                    "baseline_masked": {"epochs": 1}},
    # the original's four, one control and one budget-matched run: the others plan and train
    # through the same code
    "train_stages": {"dense": ["baseline", "lottery"], "sel": ["sel95", "warmup_sel", "sel_random_order"],
                     "budget": ["dense_at_sel95"], "measured": []},
}


def env_for_stages() -> dict:
    """The test's own interpreter first on PATH (DVC stages call `python`), no outside store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd, cwd, check=True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=kw.pop("env", env_for_stages()), capture_output=True,
                         text=True, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = merge(yaml.safe_load(path.read_text()), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory) -> Path:
    """A class-folder .tar.gz of 12 training and 6 test images per class (read, never written)."""
    path = tmp_path_factory.mktemp("source") / "tiny-cifar.tar.gz"
    return write_class_folder_tar(path, make_arrays(12, 6))


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow store (its schema, set up once: seconds of migrations) for tests to copy;
    no experiment of ours in it, so each is created where its project's artifacts belong."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def _tiny_project(repo: Path, source: Path) -> Path:
    """A git + DVC repository holding a copy of the project, set to the tiny configuration."""
    for name in PROJECT_FILES:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    set_params(repo, merge({"data": {"source": str(source)}}, TINY))
    run(["git", "init", "-q", "-b", "main"], repo)
    git_commit(repo, "tiny")
    return repo


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory, tiny_source) -> Path:
    """The tiny project with its params checked and its data downloaded (`dvc repro download`,
    dvc.lock committed), made once: a project copied from it starts where most tests begin."""
    repo = _tiny_project(tmp_path_factory.mktemp("prepared") / "repo", tiny_source)
    run(["dvc", "repro", "download"], repo)
    git_commit(repo, "data")
    return repo


@pytest.fixture
def project(request, tmp_path, tiny_source, prepared_project, migrated_store) -> Path:
    """The tiny project, with its data downloaded (a copy of `prepared_project`) unless the test
    is marked `unprepared` (it watches the first `dvc repro` run every stage), and an empty
    MLflow store at its root unless it is marked `fresh_store` (it checks how the store is
    created, or that none is)."""
    repo = tmp_path / "repo"
    if request.node.get_closest_marker("unprepared"):
        _tiny_project(repo, tiny_source)
    else:  # DVC's state database holds absolute paths: it is rebuilt, not copied
        shutil.copytree(prepared_project, repo, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    if request.node.get_closest_marker("fresh_store") is None:
        shutil.copy(migrated_store, repo / "mlflow.db")
    return repo


def mlflow_runs(repo: Path, experiment: str = "sel-benchmark"):
    """(client, {experiment (its tag): [runs]}) of an MLflow experiment (default: the training
    runs; the aggregate's are in `sel-benchmark-aggregate`) in the project's default store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment)
    by_name = {}
    for r in client.search_runs([experiment.experiment_id]):
        by_name.setdefault(r.data.tags.get("experiment"), []).append(r)
    return client, by_name


# The longest tests, longest first (minutes each on a 2-core CPU): they start first, so that the
# pytest-xdist workers, each taking the next test when it frees, end at about the same time.
LONGEST = ["test_pipeline.py::test_repro_tracks_every_run",
           "test_reliability.py::test_sigkill_mid_epoch_resumes_into_the_same_run[lottery",
           "test_reliability.py::test_sigkill_mid_epoch_resumes_into_the_same_run[sel95",
           "test_reliability.py::test_two_queued_experiments_run_in_parallel_on_sqlite",
           "test_reliability.py::test_sigkill_mid_epoch_resumes_into_the_same_run[baseline",
           "test_parallel.py::test_parallel_runs_the_pipeline"]


def pytest_collection_modifyitems(items):
    """Tests that run the pipeline for real (a DVC project, Ray, servers) are `slow`: the quick
    tier, `python -m pytest -m "not slow"`, leaves them out for the edit loop; CI runs them all.
    The LONGEST go first, in that order."""
    for item in items:
        if "project" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

    def rank(item) -> int:
        return next((i for i, name in enumerate(LONGEST) if f"/{name}" in f"/{item.nodeid}"), len(LONGEST))

    items.sort(key=rank)  # stable: the others keep their order
