"""MLflow: one run per experiment each time it trains, in the project's one store.

The store is `MLFLOW_TRACKING_URI` when set, else MLflow's embedded default, a SQLite file
`mlflow.db` at the project root (DVC_ROOT under `dvc exp run --temp/--queue`, whose working
copies are deleted), with artifacts in `mlartifacts/` beside it. The store is reached, written
to, and the experiment created, before any training starts, so a wrong URI or a read-only store
fails in seconds. Each run is tagged with its host and process, so that a later run of the same
name can mark one whose process died without a word (SIGKILL, power) KILLED instead of leaving
it RUNNING forever.
"""

import fcntl
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from pathlib import Path

from sel.core.errors import SelError
from sel.core.files import process_alive, project_root

DEFAULT_DB = "mlflow.db"


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
            _check_writable(self.uri)
        except SelError:
            raise
        except Exception as e:  # MlflowException, connection errors, a broken store file
            hint = ("start the server, or unset MLFLOW_TRACKING_URI to use the local mlflow.db"
                    if "MLFLOW_TRACKING_URI" in os.environ else "check the file and its folder")
            raise SelError(f"cannot reach the MLflow tracking store {self.uri} "
                           f"({type(e).__name__}: {_reason(e)}); {hint}") from None
        self.client = _Store(self.client, self.uri)

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
        experiment, say); returns the epochs it already holds, or None when the run is gone or
        is not this training's (its `experiment` or `seed` tag differs: a checkpoint's seal
        proves its bytes intact, not who wrote them), which is then left untouched."""
        from mlflow.entities import RunTag

        try:
            run = self.client.get_run(run_id)
        except Exception:
            return None
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != self.experiment_id:
            return None
        theirs = {k: run.data.tags.get(k) for k in ("experiment", "seed")}
        if theirs != {k: None if tags.get(k) is None else str(tags[k]) for k in theirs}:
            print(f"not resuming MLflow run {run_id}: it is experiment {theirs['experiment']} seed "
                  f"{theirs['seed']}, not {tags.get('experiment')} seed {tags.get('seed')}; starting a new run",
                  file=sys.stderr, flush=True)
            return None
        self.run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in {**tags, **_process()}.items()
                                            if v is not None])
        return {m.step for m in self.client.get_metric_history(run_id, "acc/test_full")}

    def start(self, run_name: str, params: dict, tags: dict) -> str:
        from mlflow.entities import Param

        self._end_orphans(run_name)
        tags = {k: str(v) for k, v in {**tags, **_process()}.items() if v is not None}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return self.run_id

    def _end_orphans(self, run_name: str) -> None:
        """End the RUNNING runs of this name whose process, on this host, is gone: a stage killed
        outright, or whose checkpoint could not be read, leaves its run behind. One that recorded
        epochs is marked KILLED; one cut short before its first epoch (the store lost between
        creating it and the checkpoint naming it) recorded nothing and is deleted (restorable),
        so that each training shows once."""
        query = f"attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'"
        for run in self.client.search_runs([self.experiment_id], query):
            tags = run.data.tags
            pid = int(tags.get("sel.pid", 0))  # runs without it are left alone
            if tags.get("sel.host") == socket.gethostname() and pid > 0 and not process_alive(pid):
                if run.data.metrics:
                    self.client.set_terminated(run.info.run_id, "KILLED")
                else:
                    self.client.delete_run(run.info.run_id)

    def log_metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in values.items()])

    def set_tags(self, tags: dict) -> None:
        """Tags known only once the run has trained (what ran beside it)."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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
            self._finish_if_reachable("KILLED")
            raise
        except BaseException:
            self._finish_if_reachable("FAILED")
            raise
        self.finish()

    def _finish_if_reachable(self, status: str) -> None:
        """Mark the run; with the store gone, the error that ended the run is the one to show."""
        try:
            self.finish(status)
        except SelError:
            pass


class _Store:
    """The MLflow client, with a store lost mid-run (a server stopped, a network gone) turned
    into one line naming it: what the store already holds stays, and a checkpoint keeps the
    rest, so running again completes the run."""

    def __init__(self, client, uri: str):
        self._client, self._uri = client, uri

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as e:
                raise SelError(f"lost the MLflow tracking store {self._uri} ({type(e).__name__}: "
                               f"{_reason(e)}); what it holds is kept: run again once it answers") from None

        return call


def _process() -> dict:
    return {"sel.host": socket.gethostname(), "sel.pid": os.getpid()}


def _check_writable(uri: str) -> None:
    """A SQLite store must take a write lock now: a read-only file would otherwise pass the
    start-up check and fail at the first metric, after the work."""
    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///")
    try:
        with closing(sqlite3.connect(path, timeout=60, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE sel_write_probe (x)")  # rolled back: nothing stays
            db.execute("ROLLBACK")
    except sqlite3.Error as e:
        raise SelError(f"the MLflow store {path} is not writable ({e}); fix its permissions (and its "
                       f"folder's), or set MLFLOW_TRACKING_URI to another store") from None


def _reason(e: Exception) -> str:
    """The part of a connection error that says what happened (`[Errno 111] Connection
    refused`), which comes after a long URL in requests' message; a file's error whole, as
    the path it names is what to fix."""
    if isinstance(e, OSError) and e.filename is not None:
        return str(e)
    text = str(e)
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return found.group(0).strip() if found else text.splitlines()[0][:200] if text else ""


def run_tags(name: str, provenance: dict, device: str | None, precision: str | None) -> dict:
    """What ties a run to its origin: code, DVC experiment or sweep trial, data and hardware."""
    return {
        "experiment": name,
        "mlflow.source.git.commit": git_commit(Path.cwd()),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME"),
        "dvc.stage": os.environ.get("DVC_STAGE"),
        "sweep": os.environ.get("SEL_SWEEP"),  # set by sel.scale.sweep for its trials
        "sweep.trial": os.environ.get("SEL_SWEEP_TRIAL"),
        "sweep.overrides": os.environ.get("SEL_SWEEP_OVERRIDES"),
        "data.source": provenance.get("source"),
        "data.variant": provenance.get("variant"),
        "data.sha256": provenance.get("sha256"),
        "data.md5": provenance.get("md5"),
        "device": device,
        "precision": precision,
    }
