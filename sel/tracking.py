"""MLflow: one run per experiment each time it trains, in the project's one store.

The store is `MLFLOW_TRACKING_URI` when set, else MLflow's embedded default, a SQLite file
`mlflow.db` at the project root (DVC_ROOT under `dvc exp run --temp/--queue`, whose working
copies are deleted), with artifacts in `mlartifacts/` beside it. The store is reached, and the
experiment created, before any training starts, so a wrong URI fails in seconds.
"""

import fcntl
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import SelError
from .files import project_root

DEFAULT_DB = "mlflow.db"

# MLflow's chart view groups metrics by the part of their key before "/": each history column is
# logged under its section, so accuracy, compute, sparsity and the per-class E, C and accuracy
# sit apart, with the column's own name after it (per class: the class).
SECTIONS = {"test_full": "acc", "test_100": "acc", "train_acc": "acc", "train_loss": "loss",
            "flops_proxy_T": "compute", "flops_executed_T": "compute", "flops_eval_T": "compute",
            "time_s": "compute", "sparsity": "sparsity", "params_changed": "sparsity",
            "gamma": "sparsity", "stage": "schedule"}
PER_CLASS = {"acc_": "class_acc", "E_": "E", "C_": "C"}


def metric_key(column: str) -> str:
    """The MLflow key of a history column: `acc/test_full`, `compute/time_s`, `E/cat`."""
    for prefix, section in PER_CLASS.items():
        if column.startswith(prefix):
            return f"{section}/{column.removeprefix(prefix)}"
    return f"{SECTIONS[column]}/{column}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DEFAULT_DB}"


@contextmanager
def _store_lock(uri: str):
    """Serialise first use of a SQLite store across processes: two stages creating or
    migrating the same file at once would otherwise fail (`dvc queue start -j 2`)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _fail_fast():
    """No retries and a short timeout while checking that a tracking server answers."""
    keys = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: v for k, v in keys.items() if saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class Tracker:
    """An MLflow experiment reached and ready; `start` opens this training's run."""

    def __init__(self, experiment: str, uri: str | None = None):
        from mlflow import MlflowClient

        self.uri = uri or tracking_uri()
        self.run_id: str | None = None
        try:
            with _fail_fast(), _store_lock(self.uri):  # the client creates or migrates the store
                self.client = MlflowClient(self.uri)
                self.experiment_id = self._experiment(experiment)
        except SelError:
            raise
        except Exception as e:  # MlflowException, connection errors, a broken store file
            hint = ("start the server, or unset MLFLOW_TRACKING_URI to use the local mlflow.db"
                    if "MLFLOW_TRACKING_URI" in os.environ else "check the file and its folder")
            raise SelError(f"cannot reach the MLflow tracking store {self.uri} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); {hint}") from None

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                raise SelError(f"MLflow experiment {name!r} is deleted; restore it "
                               f"(mlflow experiments restore) or set mlflow.experiment to another name")
            return found.experiment_id
        location = None
        if self.uri == f"sqlite:///{project_root() / DEFAULT_DB}":
            location = (project_root() / "mlartifacts").as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def resume(self, run_id: str, tags: dict) -> set[int] | None:
        """Reopen a run of an interrupted training, with the tags of this attempt (its DVC
        experiment, say); returns the epochs it already holds, or None when the run is gone."""
        from mlflow.entities import RunTag

        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != self.experiment_id:
            return None
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])
        return {m.step for m in self.client.get_metric_history(run_id, metric_key("test_full"))}

    def start(self, run_name: str, params: dict, tags: dict) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={k: str(v) for k, v in tags.items() if v is not None})
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return self.run_id

    def log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in values.items()])

    def log_artifacts(self, *paths: Path) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)

    @contextmanager
    def recording(self):
        """The open run ends FINISHED when the block does, KILLED on Ctrl-C or SIGTERM,
        FAILED on any other error (which goes on up)."""
        try:
            yield self
        except KeyboardInterrupt:
            self.finish("KILLED")
            raise
        except BaseException:
            self.finish("FAILED")
            raise
        self.finish()


def run_tags(name: str, provenance: dict, device: str | None, precision: str | None) -> dict:
    """What ties a run to its origin: code, DVC experiment, data and hardware."""
    return {
        "experiment": name,
        "mlflow.source.git.commit": git_commit(Path.cwd()),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME"),
        "dvc.stage": os.environ.get("DVC_STAGE"),
        "data.source": provenance.get("source"),
        "data.variant": provenance.get("variant"),
        "data.sha256": provenance.get("sha256"),
        "data.md5": provenance.get("md5"),
        "device": device,
        "precision": precision,
    }
