"""Per-epoch checkpoints, so that a training stage killed at any moment goes on where it stopped.

One file per experiment and configuration under `checkpoints/` at the project root (so a run in a
`dvc exp run --temp` copy finds it again), named by a fingerprint of everything the run depends
on: its params, the bytes of its inputs and of the library. Written atomically after every epoch,
read with `weights_only=True` (no code can run from it), removed once the stage has finished.
While one process trains a configuration it holds the file's lock; a second process training
the same configuration at the same time (two queued experiments sharing the baseline, say)
keeps no checkpoint rather than wait or collide.
"""

import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from .files import anchored

FORMAT = 1


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(experiment: str, params: dict, inputs: list[Path]) -> str:
    library = Path(__file__).parent
    code = {p.name: _file_digest(p) for p in sorted(library.glob("*.py"))}
    blob = json.dumps({"experiment": experiment, "params": {k: str(v) for k, v in params.items()},
                       "inputs": {str(p): _file_digest(p) for p in inputs}, "code": code},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpoint:
    """The checkpoint file of one experiment configuration, held locked while training."""

    def __init__(self, experiment: str, params: dict, inputs: list[Path], folder: Path | None = None):
        folder = folder or anchored("checkpoints")
        folder.mkdir(parents=True, exist_ok=True)
        self.path: Path | None = folder / f"{experiment}-{fingerprint(experiment, params, inputs)}.pt"
        self._lock = open(self.path.with_suffix(".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[{experiment}] the same configuration is training in another process; "
                  f"this one keeps no checkpoint", file=sys.stderr, flush=True)
            self._lock.close()
            self.path = None

    def load(self, device: torch.device) -> dict | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as e:  # unreadable or not ours: start afresh rather than trust it
            print(f"ignoring unreadable checkpoint {self.path} ({type(e).__name__})", file=sys.stderr,
                  flush=True)
            return None
        return state if isinstance(state, dict) and state.get("format") == FORMAT else None

    def save(self, state: dict) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + f".partial-{os.getpid()}")
        try:
            torch.save({**state, "format": FORMAT}, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
