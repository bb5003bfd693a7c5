"""What trained beside a run (DESIGN.md, "Savings and budgets": a run's time is measured with no
other training beside it, or the summary says what ran beside it). At each epoch end the run
looks, through /proc, for other processes training: `python -m pipeline.train` (a stage, a sweep
trial) or `python -m sel.speed.bench`. Its own process, its ancestors (DVC, a shell) and its
descendants (DataLoader workers, which carry its command line) are not others; nor is a
matching child of a matching process (another run's workers): each other run counts once."""

import os
from pathlib import Path

MODULES = ("pipeline.train", "sel.speed.bench")  # the `-m` modules that train
PROC = Path("/proc")


def _processes() -> dict[int, tuple[int, list[str], str | None]]:
    """{pid: (parent pid, argv, DVC_STAGE)} of every process readable now (one may end while it
    is read). DVC_STAGE: a training stage that DVC runs names its item only there (dvc.yaml's
    commands carry no names); None where unset or unreadable (another user's process)."""
    out = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except OSError:
            continue
        # the command name in parentheses may hold spaces or parentheses: the fields follow the last ")"
        out[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), argv, _dvc_stage(entry))
    return out


def _dvc_stage(entry: Path) -> str | None:
    try:
        env = (entry / "environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    return next((v.partition("=")[2] for v in env if v.startswith("DVC_STAGE=")), None)


def training_name(argv: list[str], dvc_stage: str | None = None) -> str | None:
    """`experiment@seed` of a training stage (from its arguments, or under DVC from its
    DVC_STAGE, `train_dense@EXPERIMENT-SEED`), the module of a benchmark, None if it trains nothing."""
    module = next((a for a in argv if a in MODULES), None)
    if module is None:
        return None
    rest = argv[argv.index(module) + 1:]
    if module == "pipeline.train" and len(rest) >= 3:
        return f"{rest[1]}@{rest[2]}"
    if module == "pipeline.train" and (dvc_stage or "").startswith("train_"):
        experiment, _, seed = dvc_stage.partition("@")[2].rpartition("-")  # a seed holds no '-'
        return f"{experiment}@{seed}"
    return module


def _chain(pid: int, procs: dict[int, tuple]) -> list[int]:
    """`pid` and its ancestors, nearest first."""
    chain = [pid]
    while chain[-1] in procs and procs[chain[-1]][0] > 0 and procs[chain[-1]][0] not in chain:
        chain.append(procs[chain[-1]][0])
    return chain


def training_beside() -> list[str]:
    """The names of the other training runs on this host now, one per run."""
    procs, pid = _processes(), os.getpid()
    own = set(_chain(pid, procs)) | {p for p in procs if pid in _chain(p, procs)}
    names = {p: training_name(argv, stage) for p, (_, argv, stage) in procs.items() if p not in own}
    training = {p: n for p, n in names.items() if n is not None}
    return sorted(n for p, n in training.items() if procs[p][0] not in training)


class Beside:
    """The peak number of other training runs seen at the samples, and every name seen; its
    state goes into the checkpoint, so a resumed run keeps what its first part saw."""

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.peak, self.names = state.get("peak", 0), set(state.get("names", []))

    def sample(self) -> None:
        now = training_beside()
        self.peak = max(self.peak, len(now))
        self.names.update(now)

    def state(self) -> dict:
        return {"peak": self.peak, "names": sorted(self.names)}

    def tags(self) -> dict:
        """The MLflow tag `sel.beside`: the names seen, or "none"."""
        return {"sel.beside": ", ".join(sorted(self.names)) or "none"}

    def summary(self) -> dict:
        """What summary.json records: `compute/beside_max` and `beside` (the names)."""
        return {"compute/beside_max": self.peak, "beside": sorted(self.names)}
