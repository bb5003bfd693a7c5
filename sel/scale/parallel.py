"""`dvc repro` with the training stages run side by side, N at a time.

    python -m sel.scale.parallel [-j N]

DVC runs one stage at a time, but lets several `dvc repro` processes share a workspace: each
holds the repository lock only while it reads the pipeline and records a result, and while a
stage's command runs it locks only that stage's deps (read) and outs (write); `--wait-for-lock`
makes a process wait for the repository lock instead of failing. So this runs, in order:

1. `dvc repro download sort calibrate`: what the training stages read;
2. every training stage (`train_dense@*`, `train_sel@*`), N at a time, each as its own
   `dvc repro --single-item STAGE`: DVC decides whether it is stale, runs its command and records
   it in dvc.lock, exactly as `dvc repro` would;
3. `dvc repro`: what is left (the aggregate).

The stages, their deps and dvc.lock are those of `dvc repro`, so a later `dvc repro` or `dvc exp
run -S sel.x=...` re-runs just what it would have. It pays on a GPU, which one experiment at the
protocol's batch of 64 leaves mostly idle; on a CPU the stages share its cores (each is given
cores / N threads), which gains nothing there.
"""

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sel.core.errors import SelError

PREPARE = ("download", "sort", "calibrate")
TRAINING = ("train_dense@", "train_sel@", "train_budget@")


def dvc(*args: str) -> list[str]:
    return ["dvc", "--wait-for-lock", *args]


def training_stages() -> list[str]:
    try:
        out = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True, text=True)
    except FileNotFoundError:
        raise SelError("dvc is not on PATH (pip install -e . in this environment)") from None
    if out.returncode:
        lines = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
        raise SelError(f"dvc stage list failed: {lines[-1]}")
    return [name for name in out.stdout.split() if name.startswith(TRAINING)]


class Printer:
    """Lines of several stages at once, whole and prefixed with their stage."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self.lock:
            print(line, flush=True)


def run_stage(name: str, env: dict, say: Printer) -> tuple[int, float, str]:
    """`dvc repro --single-item NAME`, its output prefixed; (exit status, seconds, last line)."""
    started = time.perf_counter()
    last = ""
    with subprocess.Popen(dvc("repro", "--single-item", name), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                last = line
                say(f"[{name}] {line}")
    return proc.returncode, time.perf_counter() - started, last


def run(jobs: int) -> None:
    say = Printer()
    started = time.perf_counter()
    stages = training_stages()  # before any work: a broken dvc.yaml or params.yaml ends it here
    say(f"[parallel] {shlex.join(dvc('repro', *PREPARE))}")
    if subprocess.run(dvc("repro", *PREPARE)).returncode:
        raise SelError("preparing the data failed (above); no training stage was started")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    say(f"[parallel] {len(stages)} training stages, {jobs} at a time")
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(stages, pool.map(lambda s: run_stage(s, env, say), stages)))
    for name, (code, seconds, _) in results.items():
        say(f"[parallel] {name}: {'ok' if code == 0 else f'FAILED (exit {code})'}, {seconds:.1f}s")
    failed = {name: last for name, (code, _, last) in results.items() if code}
    if failed:
        first, last = next(iter(failed.items()))
        raise SelError(f"{len(failed)} training stage(s) failed ({', '.join(failed)}); "
                       f"{first}: {last}; run again to go on from their last finished epoch")
    say(f"[parallel] {shlex.join(dvc('repro'))}")
    if subprocess.run(dvc("repro")).returncode:
        raise SelError("dvc repro after the training stages failed (above)")
    say(f"[parallel] done in {time.perf_counter() - started:.1f}s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-j", "--jobs", type=int, default=4, help="training stages at a time (default 4)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("-j must be at least 1")
    try:
        run(args.jobs)
    except SelError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
