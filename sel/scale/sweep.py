"""Sweeps: a grid of params overrides run as trials on Ray, one machine or a cluster.

    python -m sel.scale.sweep GRID.yaml [--address ADDRESS] [--workers N] [--cpus-per-trial C]
                                  [--gpus-per-trial G] [--retries R]

GRID.yaml names the sweep and its axes:

    name: percentile             # folder sweeps/<name>/, MLflow tag `sweep`
    protocol: cpu-seeds          # optional: a named protocol's overrides (sel.config.protocols) first
    base: {data.source: ...}     # optional: overrides for every trial
    grid:                        # every combination of the axes' values is a point
      calibrate.percentile: [30, 40]
    experiments: [baseline, sel95]   # default: every experiment of params.yaml's train_stages
    seeds: [42, 43]                  # default: params.yaml's seeds

A key that is there holds what it names: an empty list, or a string where a list goes, is refused
before any work (leave the key out for its default); `grid: {}`, like no `grid`, is one point.

A trial is one experiment at one seed and one point. It runs the training stage's own script
(`python -m pipeline.train`) in a folder of its own holding its params.yaml, so its outputs, its
MLflow run (tagged `sweep`, `sweep.trial`, `sweep.overrides`) and its checkpoint are those of a
DVC stage. The data it reads (the npz, the pools of `sort`, the gamma of `calibrate`) is prepared
once per distinct value of the params those stages read, by their own scripts, and linked into
every trial that needs it. A finished trial has its summary.json: running the sweep again runs
only what is missing, and a trial interrupted mid-way resumes from its checkpoint, into the same
MLflow run; the aggregate run `sweep:<name>` is updated, not added again. One driver at a time: a
second one of the same sweep is refused while the first holds sweeps/<name>/driver.lock. Ray
schedules the steps (`--gpus-per-trial 0.25`: four trials share a GPU) and runs a step again
when its worker dies (the step's process dies with its worker).
"""

import argparse
import ctypes
import hashlib
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from sel.core.errors import SelError
from sel.experiments.plan import needs_gamma, needs_pools
from sel.core.files import locked, project_root, run_outputs, seed_data, staged_outputs
from sel.config.names import check_name
from sel.config.params import flatten, parse_params, read_params, stage_keys
from sel.config.protocols import PROTOCOLS, apply_overrides

GRID_KEYS = {"name", "protocol", "base", "grid", "experiments", "seeds"}


def _non_empty_list(values, item) -> bool:
    return isinstance(values, list) and len(values) > 0 and all(item(v) for v in values)


# What a grid key holds when it is there: an empty list would plan nothing, or fall back to the
# default unasked, and a string where a list goes would be read letter by letter. `grid: {}` is
# one point, the base, as is no `grid`.
SHAPES = {
    "protocol": (lambda v: v is None or isinstance(v, str), "the name of a protocol in sel.config.protocols"),
    "base": (lambda v: isinstance(v, dict), "a mapping of overrides (key: value)"),
    "grid": (lambda v: isinstance(v, dict), "a mapping of axes (key: [values]; {} or none: one point)"),
    "experiments": (lambda v: _non_empty_list(v, lambda e: isinstance(e, str)),
                    "a non-empty list of experiment names (leave it out for all of train_stages)"),
    "seeds": (lambda v: _non_empty_list(v, lambda s: type(s) is int and 0 <= s < 2**32),
              "a non-empty list of integers from 0 to 2**32 - 1 (leave it out for params.yaml's seeds)"),
}


@dataclass(frozen=True)
class Step:
    """One stage script run in `folder`, done once `output` (relative to it) exists."""
    folder: Path
    argv: tuple[str, ...]
    output: str


@dataclass
class Trial:
    experiment: str
    seed: int
    point: dict  # the grid's overrides at this point
    read: dict   # those of them its stage reads (what tells its run apart)
    raw: dict    # the trial's whole params.yaml
    step: Step
    needs: list  # the preparation Steps it reads

    @property
    def name(self) -> str:
        return self.step.folder.name


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _reads(flat: dict, keys: list[str]) -> dict:
    """The params (dotted) a stage reads, from its dvc.yaml keys."""
    return {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in keys)}


def load_grid(path: Path) -> dict:
    try:
        grid = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SelError(f"cannot read the sweep grid {path}: {e}") from None
    if not isinstance(grid, dict):
        raise SelError(f"{path}: a mapping with `name` and `grid` (axis: [values]) is expected")
    for key, (fits, shape) in SHAPES.items():
        if key in grid and not fits(grid[key]):
            raise SelError(f"{path}: `{key}` must be {shape}")
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise SelError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(GRID_KEYS))})")
    check_name(f"{path}: name", grid.get("name"))  # a folder, an MLflow tag
    if grid.get("protocol") is not None and grid["protocol"] not in PROTOCOLS:
        raise SelError(f"{path}: unknown protocol {grid['protocol']!r} (known: {', '.join(PROTOCOLS)})")
    for axis, values in grid.get("grid", {}).items():
        if not _non_empty_list(values, lambda v: True):
            raise SelError(f"{path}: grid axis {axis!r} needs a non-empty list of values")
    return grid


def plan(grid: dict, raw: dict, root: Path) -> list[Trial]:
    """Every trial of the grid, every point's params validated (one line naming the point);
    nothing is written: `lay_out` does, under the sweep's lock."""
    base = {**PROTOCOLS.get(grid.get("protocol") or "full"), **(grid.get("base") or {})}
    axes = grid.get("grid") or {}
    points = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        try:
            params_raw = apply_overrides(raw, {**base, **point})
            params = parse_params(params_raw)
        except SelError as e:
            raise SelError(f"sweep {grid['name']}, point {point}: {e}") from None
        # a twin sized from its method's measured run would need that run's trial first: not swept
        sweepable = [n for n in params.train_stages.names() if n not in params.train_stages.trained("measured")]
        names = grid.get("experiments") or sweepable
        unknown = [n for n in names if n not in sweepable]
        if unknown:
            raise SelError(f"sweep {grid['name']}: experiment {unknown[0]!r} is not in train_stages, or is a "
                           f"twin sized from a measured run (sweepable: {', '.join(sweepable)})")
        points.append((point, params_raw, params, names))
    folder, prepared = root / "sweeps" / grid["name"], {}
    return [_trial(folder, name, int(seed), point, {**params_raw, "seeds": [seed]}, params, prepared)
            for point, params_raw, params, names in points
            for seed in grid.get("seeds") or list(params.seeds) for name in names]


def _trial(folder: Path, name: str, seed: int, point: dict, raw: dict, params, prepared: dict) -> Trial:
    spec = params.experiments[name]
    flat = flatten(raw)
    group = params.train_stages.group_of(name)
    # each step is named by what it reads, as DVC would: points that differ only in params an
    # experiment does not read (the baseline across SEL knobs) share one run
    reads = _reads(flat, stage_keys(f"train_{group}", name))
    data = _reads(flat, stage_keys("download"))
    needs = [_prep(prepared, folder / "prep" / f"data-{_digest(data)}", ("pipeline.download",),
                   "data/cifar10.npz")]
    for stage, output, needed in (("sort", "pools.npz", needs_pools(spec)),
                                  ("calibrate", "gamma.json", needs_gamma(spec, params))):
        if needed:
            read = _reads(flat, stage_keys(stage))
            key = _digest([needs[0].folder.name, seed, read])
            needs.append(_prep(prepared, folder / "prep" / f"{stage}-{key}", (f"pipeline.{stage}", str(seed)),
                               f"{seed_data(seed)}/{output}"))
            reads.update(read)
    reads.update(data)
    trial_folder = folder / "trials" / f"{name}-seed{seed}-{_digest([n.folder.name for n in needs] + [reads])}"
    step = _prep(prepared, trial_folder, ("pipeline.train", group, name, str(seed)),
                 str(run_outputs(name, seed)[2]))
    read = {k: v for k, v in point.items() if any(r == k or r.startswith(k + ".") for r in reads)}
    return Trial(name, seed, point, read, raw, step, needs)


def _prep(prepared: dict, folder: Path, argv: tuple, output: str) -> Step:
    return prepared.setdefault(folder.name, Step(folder, argv, output))


@contextmanager
def one_driver(folder: Path, name: str):
    """Hold the sweep's lock file while the block runs: a second driver of the same sweep would
    lay out the same folders and train every unfinished trial a second time. The lock goes with
    the driver's process however it ends (its Ray processes do not inherit the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = locked(folder / "driver.lock")
    if lock is None:
        raise SelError(f"sweep {name} is running in another process (it holds {folder / 'driver.lock'}); "
                       f"wait for it to end, or give this grid another name")
    with lock:
        yield


def lay_out(trials: list[Trial]) -> None:
    """Every step's folder: its params.yaml and links to the prepared files it reads. The params
    of a shared preparation are its first trial's (the others agree on what it reads)."""
    for trial in trials:
        data = trial.needs[0]
        _lay_out(trial.step.folder, trial.raw, data.folder, trial.needs[1:])
        for prep in trial.needs:
            _lay_out(prep.folder, trial.raw, data.folder if prep is not data else None, [])


def _lay_out(folder: Path, raw: dict, data_from: Path | None, others: list[Step]) -> None:
    """One step's folder; a driver killed midway leaves whole files, which the next one keeps."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    if not (folder / "params.yaml").exists():
        with staged_outputs(folder / "params.yaml") as (tmp,):
            tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    links = {}
    if data_from is not None:
        links.update({f"data/cifar10.{ext}": data_from / f"data/cifar10.{ext}" for ext in ("npz", "json")})
    links.update({s.output: s.folder / s.output for s in others})
    for link, target in links.items():
        path = folder / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(target)


def _die_with_parent():
    """The step's process ends with the Ray worker running it (PR_SET_PDEATHSIG), so a killed
    worker leaves no orphan holding the trial's checkpoint."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def run_step(step: Step, env: dict, *after) -> dict:
    """Run one stage script (a Ray task; `after`: the steps it waits for). Its output and log go
    to its folder; a failure raises the stage's own one-line error."""
    out = step.folder / step.output
    if out.exists():
        return {"seconds": 0.0, "ran": False}
    started = time.monotonic()
    log = step.folder / "log.txt"
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", *step.argv], cwd=step.folder, stdout=f,
                              stderr=subprocess.STDOUT, env={**os.environ, **env},
                              preexec_fn=_die_with_parent)
    if proc.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise SelError(f"{' '.join(step.argv)} in {step.folder} failed: {lines[-1] if lines else proc.returncode}")
    return {"seconds": time.monotonic() - started, "ran": True}


# Ray gives a node it starts the machine's network address even when told 127.0.0.1, and its
# servers (GCS, raylet, workers, agents) listen on every interface unless that address is
# loopback. Set to 0, this setting keeps a single machine on loopback, as Ray does on macOS and
# Windows; Ray reads it when imported, and its processes inherit it.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _connect(address: str | None, workers: int | None):
    """Ray at `address`, or else (no address, or `local`) a local instance of this driver's own,
    never one that RAY_ADDRESS or a `ray start` names, listening on loopback only: whoever
    reaches Ray's ports can have it run code as this user (CVE-2023-48022)."""
    local = address in (None, "local")
    if local:
        os.environ[LOOPBACK_ONLY] = "0"
    import ray
    from ray.util import get_node_ip_address

    if local and not ipaddress.ip_address(get_node_ip_address()).is_loopback:
        raise SelError(f"a local Ray would listen on {get_node_ip_address()}, not on loopback only: "
                       f"ray was imported before sel.scale.sweep set {LOOPBACK_ONLY}=0; set it first")
    try:
        if local:
            ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="ERROR",
                     log_to_driver=False)
        else:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as e:
        raise SelError(f"cannot start or reach Ray{'' if local else f' at {address}'} "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return ray


def run(trials: list[Trial], name: str, root: Path, args) -> list[Trial]:
    """Submit every unfinished trial after the preparations it reads; a progress line per
    finished trial with an ETA. Returns the trials that failed."""
    ray = _connect(args.address, args.workers)
    remote = ray.remote(run_step)
    # the driver's MLflow settings travel with every step (a cluster's workers have their own env)
    env = {**{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")},
           "PYTHONPATH": str(root), "DVC_ROOT": str(root), "SEL_SWEEP": name,
           "OMP_NUM_THREADS": str(args.cpus_per_trial), "MKL_NUM_THREADS": str(args.cpus_per_trial)}
    options = {"num_cpus": args.cpus_per_trial, "num_gpus": args.gpus_per_trial, "max_retries": args.retries}
    runs = {t.step.folder: t for t in trials}  # points that read the same params share a run
    todo = [t for t in runs.values() if not (t.step.folder / t.step.output).exists()]
    print(f"sweep {name}: {len(trials)} trials, {len(runs)} distinct runs, {len(runs) - len(todo)} "
          f"already finished, {len(todo)} to run", flush=True)
    submitted, pending = {}, {}

    def submit(step: Step, step_env: dict, after: list):
        if step.folder not in submitted:
            submitted[step.folder] = remote.options(**options).remote(step, step_env, *after)
        return submitted[step.folder]

    for trial in todo:
        data = submit(trial.needs[0], env, [])
        needs = [data] + [submit(prep, env, [data]) for prep in trial.needs[1:]]
        trial_env = {**env, "SEL_SWEEP_TRIAL": trial.name, "SEL_SWEEP_OVERRIDES": json.dumps(trial.read)}
        pending[submit(trial.step, trial_env, needs)] = trial
    failed, started = [], time.monotonic()
    for done in range(1, len(todo) + 1):
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        trial = pending.pop(ref)
        elapsed = time.monotonic() - started
        try:
            ray.get(ref)
            result = json.loads((trial.step.folder / trial.step.output).read_text())
            what = f"test {result['acc/test_full']:.1%}, {result['compute/time_s']:.0f}s"
        except Exception as e:
            failed.append(trial)
            what = f"FAILED: {_message(e)}"
        print(f"[{done}/{len(todo)}] {trial.experiment} seed {trial.seed} {trial.read or ''}: {what} "
              f"| elapsed {elapsed:.0f}s, left ~{elapsed / done * (len(todo) - done):.0f}s", flush=True)
    return failed


def _message(e: Exception) -> str:
    """The one line of a failed step: Ray re-raises the stage's SelError as a subclass of it,
    the original in `cause`; anything else (a worker lost for good) by its last line."""
    if isinstance(e, SelError):
        return str(getattr(e, "cause", e))
    return str(e).strip().splitlines()[-1][:300]


def main(argv=None):
    from sel.core.cli import stage

    @stage
    def sweep():
        parser = argparse.ArgumentParser(prog="python -m sel.scale.sweep", description=__doc__.split("\n")[0])
        parser.add_argument("grid", type=Path)
        parser.add_argument("--address", help="an existing Ray cluster (auto, ray://host:10001); "
                            "default: a local Ray instance of the sweep's own, on loopback only")
        parser.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: all)")
        parser.add_argument("--cpus-per-trial", type=int, default=1)
        parser.add_argument("--gpus-per-trial", type=float, default=0.0)
        parser.add_argument("--retries", type=int, default=3, help="runs of a step whose worker died")
        args = parser.parse_args(argv)
        if args.cpus_per_trial < 1 or args.gpus_per_trial < 0 or args.retries < 0 or (args.workers or 1) < 1:
            raise SelError("--cpus-per-trial and --workers must be >= 1, --gpus-per-trial and --retries >= 0")
        root = project_root()
        grid = load_grid(args.grid)
        raw = read_params(root / "params.yaml")
        trials = plan(grid, raw, root)
        from sel.track.tracking import Tracker

        Tracker(parse_params(trials[0].raw).mlflow.experiment)  # the store answers before any work
        folder = root / "sweeps" / grid["name"]
        with one_driver(folder, grid["name"]):
            lay_out(trials)
            failed = run(trials, grid["name"], root, args)
            if failed:
                raise SelError(f"sweep {grid['name']}: {len(failed)} of {len(trials)} trials failed "
                               f"(their lines above, logs in their folders); run it again to complete them")
            from sel.scale.sweep_report import aggregate

            aggregate(grid, trials, folder)

    sweep()


if __name__ == "__main__":
    main()
