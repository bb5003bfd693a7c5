"""The MLflow store, checked before work and left clean after a crash: a read-only store is
refused in one line, and a run whose process died outright is marked KILLED, not left RUNNING."""

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT
from servers import closed_port
from sel.core.errors import SelError
from sel.track.tracking import Tracker


def tracker_in_child(code: str, uri: str, **kw) -> subprocess.CompletedProcess:
    """Run `code` after `t = Tracker('x', uri)` in a fresh Python process."""
    script = f"from sel.track.tracking import Tracker\nt = Tracker('x', {uri!r})\n{code}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def test_a_run_whose_process_died_is_ended_by_the_next_of_its_name(tmp_path):
    """Killed after an epoch: marked KILLED, what it recorded kept. Cut short before its first
    epoch (nothing recorded): deleted, so the training shows once. A live one: untouched."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, epoch in (("sel95@42", "t.log_metrics({'acc/test_full': 0.5}, step=1)"), ("lottery@42", "")):
        died = tracker_in_child(f"import os, signal\nt.start({name!r}, {{}}, {{}})\n{epoch}\n"
                                "os.kill(os.getpid(), signal.SIGKILL)", uri)
        assert died.returncode == -signal.SIGKILL
    tracker = Tracker("x", uri)
    other = Tracker("x", uri)
    other.start("baseline@42", {}, {})  # alive (this process): never touched
    tracker.start("sel95@42", {}, {})
    tracker.start("lottery@42", {}, {})
    runs = sorted((r.info.run_name, r.info.status) for r in tracker.client.search_runs([tracker.experiment_id]))
    assert runs == [("baseline@42", "RUNNING"), ("lottery@42", "RUNNING"), ("sel95@42", "KILLED"),
                    ("sel95@42", "RUNNING")]


@contextmanager
def read_only(path: Path):
    """`path` (a file or a folder) read-only for this block; root writes read-only files, so as
    root it is made immutable instead."""
    root, mode = os.geteuid() == 0, "555" if path.is_dir() else "444"
    subprocess.run(["chattr", "+i", str(path)] if root else ["chmod", mode, str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)] if root else ["chmod", "755", str(path)], check=True)


def test_a_read_only_store_is_refused_in_one_line_before_any_work(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    assert tracker_in_child("", uri).returncode == 0  # the store and its experiment exist
    with read_only(db):
        out = tracker_in_child("", uri)
    assert out.returncode != 0
    assert f"SelError: the MLflow store {db} is not writable (attempt to write a readonly database)" \
        in out.stderr


def test_a_store_in_a_folder_it_cannot_write_names_the_whole_path(tmp_path):
    """The reason once stopped at the path's opening quote: `(PermissionError: [Errno 1]
    Operation not permitted:)`."""
    folder = tmp_path / "store"
    folder.mkdir()
    with read_only(folder), pytest.raises(SelError) as raised:
        Tracker("x", f"sqlite:///{folder / 'mlflow.db'}")
    assert f"PermissionError: [Errno {1 if os.geteuid() == 0 else 13}] " in str(raised.value)
    assert f": '{folder / 'mlflow.db.lock'}'); check the file and its folder" in str(raised.value)


def test_a_closed_port_names_the_refused_connection(tmp_path, monkeypatch):
    with closed_port() as port, pytest.raises(SelError) as raised:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        Tracker("x")
    assert "Connection refused" in str(raised.value) and "\n" not in str(raised.value)
