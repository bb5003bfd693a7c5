"""The training stage, one experiment at one seed: its plan, its checkpoint (resume after a kill
into the same MLflow run), its MLflow run, and its outputs (model, history, summary), written
all or none. `pipeline/train.py` calls `train_experiment`, for DVC and for the sweep's trials.

Imports that only the end of a run needs (pandas, matplotlib) are made there, so that a stage
starts training without paying for them first.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sel.train.checkpoint import Checkpoint
from sel.method.curriculum import Pools
from sel.data.dataset import Cifar
from sel.core.errors import SelError
from sel.experiments.validation import COLUMNS
from sel.experiments.plan import (ExperimentRun, Phase, check_plan, gamma_mode, make_trainer, needs_gamma,
                                  needs_pools, plan, prep_flops)
from sel.experiments.proxy_subset import PROXY_SEED_OFFSET, proxy_model_params, proxy_subset
from sel.core.files import json_text, run_outputs, seed_data, staged_outputs
from sel.config.names import label
from sel.config.params import TWIN, Experiment, Params, flatten, plan_reads_sel
from sel.track.beside import Beside
from sel.track.tracking import Tracker, run_tags
from sel.train.training import DENSE


def metrics(run: ExperimentRun, row: dict) -> dict:
    """A history row as MLflow metrics (its columns are already `section/name`, which MLflow's
    chart view groups by); an epoch that measured no E/C (a warm-up's) logs none, rather than
    the zeros its history row holds as the original's did."""
    skip = ("epoch",) if run.phase_of(row).measure_ec else ("epoch", "E/", "C/")
    return {k: v for k, v in row.items() if not k.startswith(skip)}


def experiment_for(params: Params, group: str, name: str) -> Experiment:
    """The experiment's params, if the stage that runs it depends on everything it reads."""
    if name not in params.experiments:
        raise SelError(f"unknown experiment {name!r} (experiments: {', '.join(params.experiments)})")
    if name not in params.train_stages.trained(group):
        raise SelError(f"train_stages.{group} does not list {name!r}; run it from its own stage")
    return params.experiments[name]


def logged_params(params: Params, name: str, spec: Experiment, seed: int, phases: list[Phase]) -> dict:
    """What this run reads, and under the same keys in every run: its recipe resolved (`exp.*`)
    and its epochs (recorded, unrecorded pre-training, masked), whatever params set them."""
    sections = ["data", "model", "train"] + (["sel", "sort", "calibrate"] if plan_reads_sel(params, name) else [])
    logged = {k: v for k, v in flatten(params).items() if k.split(".")[0] in sections}
    logged.update({f"exp.{k}": v for k, v in flatten(spec).items()})
    logged.update({"experiment": name, "seed": seed, "epochs": sum(p.epochs for p in phases if p.recorded),
                   "pretrain_epochs": sum(p.epochs for p in phases if not p.recorded),
                   "masked_epochs": sum(p.epochs for p in phases if p.recorded and p.update != DENSE),
                   "exp.mask": spec.masked,
                   "exp.loss_scaled_lr": spec.scaled_lr,
                   "exp.gamma_mode": gamma_mode(spec, params) if spec.masked else None})
    return logged


def open_run(tracker: Tracker, run: ExperimentRun, checkpoint: Checkpoint, name: str, params: dict,
             tags: dict) -> dict | None:
    """Start this training's MLflow run, or, from a checkpoint, go on with the run it names:
    restore the training state and log the epochs that finished before the kill but not yet
    reached the store, so that every epoch is there exactly once. A checkpoint not to resume
    from (another's, or one that does not load) is set aside and the run it names left alone, as
    is a named run whose experiment or seed tag is not this training's (`tracker.resume`: a new
    run takes the epochs); a run of this training whose process died is ended by `tracker.start`. The checkpoint's
    state if resumed, else None."""
    state = checkpoint.resume(run)
    held = None if state is None else tracker.resume(state["mlflow_run_id"], tags)
    if held is None:
        tracker.start(name, params, tags)
    for row in run.rows:
        if held is None or row["epoch"] not in held:
            tracker.log_metrics(metrics(run, row), step=row["epoch"])
    return state


def write_outputs(outputs: tuple[Path, Path, Path, Path], run: ExperimentRun, summary: dict, title: str,
                  tracker: Tracker) -> None:
    """The declared outs, all or none (validation.csv with its header alone when the run has no
    validation split), then the run's artifacts."""
    import pandas as pd

    from sel.track.figures import run_figure

    history = pd.DataFrame(run.rows)
    validation = pd.DataFrame(run.validation.rows if run.validation else [], columns=list(COLUMNS))
    with staged_outputs(*outputs) as (pt, hist, summ, val):
        torch.save(run.trainer.model.state_dict(), pt)
        history.to_csv(hist, index=False)
        summ.write_text(json_text(summary))
        validation.to_csv(val, index=False)
    with tempfile.TemporaryDirectory() as tmp:
        figure = Path(tmp) / f"{run.name}.png"
        run_figure(history, title, figure)
        tracker.log_artifacts(*outputs[1:], figure)


def prepared_inputs(params: Params, spec: Experiment, data: Cifar, seed: int):
    """(the input files the run depends on, its pools, its gamma, the seconds their stages took):
    the pools of `sort` and the gamma of `calibrate` where the experiment reads them, a seeded
    random order for a curriculum that does not."""
    inputs, pools, gamma, seconds = [Path("data/cifar10.npz"), Path("data/cifar10.json")], None, None, 0.0
    if needs_pools(spec):
        inputs.append(seed_data(seed) / "pools.npz")
        pools = Pools.load(inputs[-1])
        with np.load(inputs[-1]) as z:
            seconds += float(z["seconds"]) if "seconds" in z else 0.0
    elif spec.recipe == "curriculum":
        pools = Pools.shuffled(data.y_train, len(data.classes), seed)
    if needs_gamma(spec, params):
        inputs.append(seed_data(seed) / "gamma.json")
        calibration = json.loads(inputs[-1].read_text())
        gamma, seconds = calibration["gamma"], seconds + calibration.get("seconds", 0.0)
    return inputs, pools, gamma, seconds


def measured_flops(params: Params, spec: Experiment, seed: int) -> tuple[list[Path], float | None]:
    """(its input, the executed TFLOPs) of the run a dense twin's budget names, where no plan
    holds them (a method listed under train_stages.measured): that run's summary.json, this seed's."""
    if spec.budget not in params.train_stages.measured:
        return [], None
    path = run_outputs(spec.budget, seed)[2]
    if not path.exists():
        raise SelError(f"experiments.{TWIN}{spec.budget}.budget = {spec.budget!r}: its size is {spec.budget}'s "
                       f"measured executed FLOPs, and {path} is not there: train {spec.budget} at seed {seed} "
                       f"first (dvc repro train_dense@{spec.budget}-{seed})")
    return [path], json.loads(path.read_text())["compute/flops_executed_T"]


def train_experiment(params: Params, group: str, name: str, seed: int) -> dict:
    """Train experiment `name` of stage group `group` (dense | sel | budget | measured) at `seed` from the prepared
    data under data/, resuming from its checkpoint if one is there; returns its summary."""
    spec = experiment_for(params, group, name)
    tracker = Tracker(params.mlflow.experiment)  # reach the store before any work
    data = Cifar.load("data/cifar10.npz")
    provenance = json.loads(Path("data/cifar10.json").read_text())
    inputs, pools, gamma, prep_seconds = prepared_inputs(params, spec, data, seed)
    measured, measured_T = measured_flops(params, spec, seed)
    counts = np.bincount(data.y_train, minlength=len(data.classes))
    phases = plan(spec, params, len(data.y_train), pools, gamma, counts, seed, measured_T)
    check_plan(name, spec, phases, pools, params.train.batch_size)
    if spec.proxy_keep is not None:  # the plan checked at its size, then its images chosen
        proxy = make_trainer(params, data, spec, seed + PROXY_SEED_OFFSET,
                             proxy_model_params(params.model, spec.proxy_scale))
        subset, proxy_seconds = proxy_subset(proxy, spec, f"{name}@{seed}")
        prep_seconds += proxy_seconds
        del proxy
        phases = plan(spec, params, len(data.y_train), pools, gamma, counts, seed, measured_T, subset)
    trainer = make_trainer(params, data, spec, seed)
    freeze = params.model.whiten_bias_epochs if params.model.arch == "airbench" else None
    run = ExperimentRun(f"{name}@{seed}", trainer, phases, data.classes, val_every=params.train.val_every,
                        freeze_whiten_after=freeze)
    run.add_prep(prep_flops(spec, params, len(data.y_train), run.train_flops, run.eval_flops, len(data.classes)),
                 prep_seconds)
    logged = {**logged_params(params, name, spec, seed, phases), "n_params": run.n_params}
    if gamma is not None:
        logged["gamma"] = gamma
    resolved = {"device": str(trainer.device), "precision": trainer.precision,
                "cuda_graphs": trainer.graphs is not None, "torch": torch.__version__}
    checkpoint = Checkpoint(f"{name}-seed{seed}", {**logged, **resolved}, inputs + measured)
    tags = {**run_tags(name, provenance, str(trainer.device), trainer.precision), "seed": seed}

    def save_checkpoint():
        checkpoint.save({"run": run.state_dict(), "mlflow_run_id": tracker.run_id, "beside": beside.state()})

    def after_epoch(run, row):
        beside.sample()
        save_checkpoint()
        if row:
            tracker.log_metrics(metrics(run, row), step=row["epoch"])

    with tracker.recording():
        resumed = open_run(tracker, run, checkpoint, f"{name}@{seed}", logged, tags)
        beside = Beside(resumed and resumed.get("beside"))  # what the run's first part saw, if resumed
        save_checkpoint()  # from here on a kill, even in the first epoch, resumes into this run
        if resumed:
            print(f"[{run.name}] resuming after epoch {run.done}/{len(run.schedule)} from "
                  f"{checkpoint.path}", file=sys.stderr)
        run.run(on_epoch=after_epoch)
        tracker.set_tags(beside.tags())
        tracker.log_metrics({"compute/beside_max": beside.peak}, step=len(run.rows))
        summary = {**run.summary(), **beside.summary(), "experiment": name, "seed": seed, "recipe": spec.recipe,
                   "gamma": gamma, **resolved,
                   "data_variant": provenance["variant"], "model_arch": params.model.arch,
                   "model_width": params.model.width, "model_widths": list(params.model.widths),
                   "pretrained": params.model.pretrained, "mlflow_run_id": tracker.run_id}
        write_outputs(run_outputs(name, seed), run, summary,
                      f"{label(name)}, seed {seed} ({provenance['variant']})", tracker)
    checkpoint.remove()
    return summary
