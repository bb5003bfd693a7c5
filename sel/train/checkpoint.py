"""Per-epoch checkpoints, so that a training stage killed at any moment goes on where it stopped.

One file per experiment and configuration under `checkpoints/` at the project root (so a run in a
`dvc exp run --temp` copy finds it again), named by a fingerprint of everything the run depends
on: its params, the bytes of its inputs and of the library. Written atomically after every epoch
with a SHA-256 of its bytes and what its name stands for (experiment, seed, configuration), read
with `weights_only=True` (no code can run from it) and resumed from only once the digest, the
keys the stage reads back and that owner check out and its state loads into the run; any other
file is set aside into `rejected/` beside it. Removed, with its lock file, once the stage has
finished. While one process trains a configuration it holds the lock file's lock; a second
process training the same configuration at the same time (two queued experiments sharing the
baseline, say) keeps no checkpoint rather than wait or collide.
"""

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import torch

from sel.core.files import anchored, locked, remove_stale_partials, writes_to

FORMAT = 4
# what the training stage (sel/experiments/stage.py) reads back: the owner, its own keys, ExperimentRun's and Trainer's state_dict
REQUIRED = {"owner": {"experiment": {}, "configuration": {}}, "mlflow_run_id": {},
            "run": {"done": {}, "rows": {}, "totals": {}, "trainer": {
                "model": {}, "optimizer": {}, "mask": {}, "generator": {}, "torch_rng": {},
                "class_e": {}, "scores": {}}}}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(experiment: str, params: dict, inputs: list[Path]) -> str:
    library = Path(__file__).parents[1]  # the whole sel package
    code = {str(p.relative_to(library)): _file_digest(p) for p in sorted(library.rglob("*.py"))}
    blob = json.dumps({"experiment": experiment, "params": {k: str(v) for k, v in params.items()},
                       "inputs": {str(p): _file_digest(p) for p in inputs}, "code": code},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _trailer(body: bytes) -> bytes:
    """The end of a sealed file after `body`: a zip comment (its length, then the text) holding
    the SHA-256 of everything before it."""
    comment = b"sha256:" + hashlib.sha256(body).hexdigest().encode()
    return len(comment).to_bytes(2, "little") + comment


_TRAILER = len(_trailer(b""))


def _seal(path: Path) -> None:
    """Put the SHA-256 of a torch.save archive into its zip comment: the file stays a plain
    torch file, yet a load can tell whether any byte of it changed."""
    with open(path, "r+b") as f:
        data = f.read()
        if data[-22:-18] != b"PK\x05\x06" or data[-2:] != b"\0\0":
            raise ValueError(f"{path}: not a zip archive without comment, as torch.save writes")
        f.seek(len(data) - 2)  # the end record's comment length, the file's last two bytes
        f.write(_trailer(data[:-2]))


def _missing(state, required: dict, where: str = "") -> str | None:
    """The first key path of `required` that `state` lacks, so a checkpoint of another layout is
    turned down here, naming its file, rather than fail in the caller on every rerun."""
    for key, inner in required.items():
        if not isinstance(state, dict) or key not in state:
            return where + key
        if missing := _missing(state[key], inner, f"{where}{key}."):
            return missing
    return None


class _Untrusted(Exception):
    """A checkpoint there but not to resume from; the message says why."""


def _read(path: Path, device: torch.device, owner: dict) -> dict:
    data = path.read_bytes()
    if data[-_TRAILER:] != _trailer(data[:-_TRAILER]):
        raise _Untrusted("checksum mismatch")
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as e:
        raise _Untrusted(f"unreadable ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _Untrusted(f"not a format-{FORMAT} checkpoint")
    if missing := _missing(state, REQUIRED):
        raise _Untrusted(f"no {missing!r} in it")
    if state["owner"] != owner:  # copied or renamed: its history and MLflow run are another's
        raise _Untrusted(f"it holds {_describe(state['owner'])}, not {_describe(owner)}")
    return state


def _describe(owner: dict) -> str:
    return f"{owner['experiment']} (configuration {owner['configuration']})"


def _one_line(e: Exception, limit: int = 240) -> str:
    """An exception as a short line: torch's state_dict errors run to a hundred lines."""
    text = f"{type(e).__name__}: {' '.join(str(e).split())}"
    return text if len(text) <= limit else text[:limit] + "..."


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `name` numbered, whichever is not taken yet."""
    path, n = folder / name, 1
    while path.exists():
        n += 1
        path = folder / f"{Path(name).stem}.{n}{Path(name).suffix}"
    return path


class Checkpoint:
    """The checkpoint file of one experiment configuration, held locked while training.
    `experiment` names the experiment and seed (`baseline-seed42`)."""

    def __init__(self, experiment: str, params: dict, inputs: list[Path], folder: Path | None = None):
        folder = folder or anchored("checkpoints")
        # what the file name stands for, written into the file too: a file copied or renamed from
        # another experiment, seed or configuration is told by what it holds
        self.owner = {"experiment": experiment, "configuration": fingerprint(experiment, params, inputs)}
        self.path: Path | None = folder / f"{experiment}-{self.owner['configuration']}.pt"
        self._lock_path = self.path.with_suffix(".lock")
        with writes_to(folder):
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = locked(self._lock_path)
        if self._lock is None:
            print(f"[{experiment}] the same configuration is training in another process; "
                  f"this one keeps no checkpoint", file=sys.stderr, flush=True)
            self.path = None
        else:
            remove_stale_partials(folder, self._partial_prefix())

    def _partial_prefix(self) -> str:
        return self.path.name + ".partial-"

    def load(self, device: torch.device) -> dict | None:
        """The saved state, or None to start afresh: none saved, or one not to be trusted (damaged,
        of another layout, or another's), which is set aside."""
        if self.path is None or not self.path.exists():
            return None
        try:
            return _read(self.path, device, self.owner)
        except (OSError, _Untrusted) as e:
            self._set_aside(str(e))
            return None

    def resume(self, run) -> dict | None:
        """The saved state, loaded into `run` (an ExperimentRun: its history, model, optimizer),
        or None to start afresh: none saved, one not to be trusted (see `load`), or one whose
        state does not load into the run (another width's model), which is set aside too, the
        run left as it was."""
        state = self.load(run.trainer.device)
        if state is None:
            return None
        try:
            run.load_state_dict(state["run"])
        except Exception as e:  # data from a file: however it fails to fit, it is not resumed from
            self._set_aside(f"its state does not load into this run ({_one_line(e)})")
            return None
        return state

    def _set_aside(self, reason: str) -> None:
        """Move the file into `rejected/` beside it and say so in one line: nothing is lost (a
        foreign file is someone's run), and no rerun stumbles on it again."""
        folder = self.path.parent / "rejected"
        folder.mkdir(exist_ok=True)
        dest = _free_name(folder, self.path.name)
        os.replace(self.path, dest)
        print(f"setting aside checkpoint {self.path}: {reason}; moved to {dest}, starting afresh",
              file=sys.stderr, flush=True)

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self._partial_prefix() + str(os.getpid()))
        try:  # through a Python file, so that a full disk is an OSError with its errno
            with writes_to(tmp):
                with open(tmp, "wb") as f:
                    torch.save({**state, "owner": self.owner, "format": FORMAT}, f)
                _seal(tmp)
                os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        """Once the stage has finished: the checkpoint and its lock file go, the lock file while
        still locked (see `sel.core.files.locked`), and this object saves no more."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        self._lock_path.unlink(missing_ok=True)
        self._lock.close()
        self.path = None
