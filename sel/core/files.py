"""Where things live and how outputs are written: all-or-nothing, never half a file."""

import errno
import fcntl
import glob
import json
import os
from contextlib import contextmanager
from pathlib import Path

from sel.core.errors import SelError


def project_root() -> Path:
    """The project root: DVC_ROOT under `dvc exp run --temp/--queue` (the stage runs in a copy
    that is deleted afterwards), else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def anchored(path: str | Path) -> Path:
    """A relative path taken from the project root, so that temporary copies find the same file."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


@contextmanager
def staged_outputs(*paths: Path):
    """Yield temporary paths beside `paths`; move all of them into place only once the block
    has written every one. On a failure the temporary files are removed and no output appears;
    a process killed outright leaves at most temporary files, which the next write of the same
    output clears."""
    paths = [Path(p) for p in paths]
    temps = [p.with_name(f".{p.name}.partial-{os.getpid()}") for p in paths]
    with writes_to(paths[0].parent):
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(p.parent, f".{p.name}.partial-")
        try:
            yield temps
            for tmp, final in zip(temps, paths):
                os.replace(tmp, final)
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)


# what stops a write rather than a read: a read-only folder or file system, a full disk or quota,
# a file where a folder is expected
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                 errno.EEXIST}


@contextmanager
def writes_to(path: Path):
    """A write that fails for want of room or permission as one line naming the path and why
    (`No space left on device`, `Read-only file system`), not a traceback; what was in place stays."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        raise SelError(f"cannot write {e.filename or path}: {e.strerror or e}") from None


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but another user's
        pass
    return True


def locked(path: Path):
    """The lock file at `path`, opened and locked (held until the file object is closed or its
    process ends, however it ends), or None while another process holds it. A holder may unlink
    the file while it still holds the lock (a finished checkpoint's does), so the file locked may
    be one no longer on disk: then lock afresh, until it is the one at `path`."""
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        if _same_file(f, path):
            return f
        f.close()


def _same_file(f, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def remove_stale_partials(folder: Path, prefix: str) -> None:
    """Remove the `{prefix}{pid}` files of writers that were killed; a live writer's stay, as
    another process writing the same output at the same time may be about to move them into place."""
    for partial in folder.glob(glob.escape(prefix) + "*"):
        pid = partial.name[len(prefix):]
        if pid.isdigit() and not process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def json_text(obj) -> str:
    return json.dumps(obj, indent=2) + "\n"


def write_json(path: Path, obj) -> None:
    """Write JSON atomically."""
    with staged_outputs(path) as (tmp,):
        tmp.write_text(json_text(obj))


def seed_data(seed: int) -> Path:
    """Where sort and calibrate of one seed write (pools.npz, gamma.json)."""
    return Path("data") / f"seed{seed}"


def run_outputs(experiment: str, seed: int) -> tuple[Path, Path, Path, Path]:
    """(model, history.csv, summary.json, validation.csv) of one experiment and seed."""
    metrics = Path("metrics") / "runs" / experiment / f"seed{seed}"
    return (Path("models") / experiment / f"seed{seed}.pt", metrics / "history.csv", metrics / "summary.json",
            metrics / "validation.csv")
