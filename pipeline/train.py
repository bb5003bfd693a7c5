"""Stage train_<experiment>: data (+ pools and gamma for SEL) -> models/<experiment>.pt,
metrics/<experiment>/history.csv and summary.json, and one MLflow run.

Usage: python -m pipeline.train {baseline,lottery,sel95,warmup_sel}

A checkpoint is saved after every epoch; run again after a kill, the stage goes on from the
last finished epoch, into the same MLflow run.
"""

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from sel.checkpoint import Checkpoint
from sel.cli import stage
from sel.curriculum import Pools
from sel.dataset import Cifar
from sel.errors import SelError
from sel.experiments import ExperimentRun, check_plan, make_trainer, plan
from sel.figures import LABELS, run_figure
from sel.files import json_text, staged_outputs
from sel.params import EXPERIMENTS, SEL_EXPERIMENTS, flatten, load_params, stage_keys
from sel.tracking import Tracker, run_tags

def metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "epoch"}


def open_run(tracker: Tracker, run: ExperimentRun, state: dict | None, name: str, params: dict,
             tags: dict) -> None:
    """Start this training's MLflow run, or, with a checkpoint, go on with the run it names:
    restore the training state and log the epochs that finished before the kill but not yet
    reached the store, so that every epoch is there exactly once."""
    held = None
    if state is not None:
        run.load_state_dict(state["run"])
        held = tracker.resume(state["mlflow_run_id"], tags)
    if held is None:
        tracker.start(name, params, tags)
    for row in run.rows:
        if held is None or row["epoch"] not in held:
            tracker.log_metrics(metrics(row), step=row["epoch"])


def write_outputs(name: str, run: ExperimentRun, summary: dict, title: str, tracker: Tracker) -> None:
    """The declared outs, all or none, then the run's artifacts."""
    history = pd.DataFrame(run.rows)
    out = Path("metrics") / name
    with staged_outputs(f"models/{name}.pt", out / "history.csv", out / "summary.json") as (pt, hist, summ):
        torch.save(run.trainer.model.state_dict(), pt)
        history.to_csv(hist, index=False)
        summ.write_text(json_text(summary))
    with tempfile.TemporaryDirectory() as tmp:
        figure = Path(tmp) / f"{name}.png"
        run_figure(history, title, figure)
        tracker.log_artifacts(out / "history.csv", out / "summary.json", figure)


@stage
def main(argv=sys.argv[1:]):
    if len(argv) != 1 or argv[0] not in EXPERIMENTS:
        raise SelError(f"usage: python -m pipeline.train EXPERIMENT, one of {', '.join(EXPERIMENTS)}")
    name = argv[0]
    params = load_params()
    tracker = Tracker(params.mlflow.experiment)  # reach the store before any work
    data = Cifar.load("data/cifar10.npz")
    provenance = json.loads(Path("data/cifar10.json").read_text())
    inputs, pools, gamma = [Path("data/cifar10.npz"), Path("data/cifar10.json")], None, None
    if name in SEL_EXPERIMENTS:
        inputs += [Path("data/pools.npz"), Path("data/gamma.json")]
        pools = Pools.load("data/pools.npz")
        gamma = json.loads(Path("data/gamma.json").read_text())["gamma"]
    phases = plan(name, params, len(data.y_train), pools, gamma)
    check_plan(name, params, phases, pools)
    trainer = make_trainer(params, data, name)
    run = ExperimentRun(name, trainer, phases, data.classes,
                        prune_fraction=params.experiments.lottery.prune_fraction)
    read = stage_keys(name) + ["data"] + (["sort", "calibrate"] if name in SEL_EXPERIMENTS else [])
    logged = {k: v for k, v in flatten(params).items() if any(k == p or k.startswith(p + ".") for p in read)}
    logged["n_params"] = run.n_params
    if gamma is not None:
        logged["gamma"] = gamma
    resolved = {"device": str(trainer.device), "precision": trainer.precision, "torch": torch.__version__}
    checkpoint = Checkpoint(name, {**logged, **resolved}, inputs)
    tags = run_tags(name, provenance, str(trainer.device), trainer.precision)

    def save_checkpoint():
        checkpoint.save({"run": run.state_dict(), "mlflow_run_id": tracker.run_id})

    def after_epoch(run, row):
        save_checkpoint()
        if row:
            tracker.log_metrics(metrics(row), step=row["epoch"])

    try:
        state = checkpoint.load(trainer.device)
        open_run(tracker, run, state, name, logged, tags)
        save_checkpoint()  # from here on a kill, even in the first epoch, resumes into this run
        if state is not None:
            print(f"[{name}] resuming after epoch {run.done}/{len(run.schedule)} from {checkpoint.path}",
                  file=sys.stderr)
        run.run(on_epoch=after_epoch)
        summary = {**run.summary(), "gamma": gamma, "device": str(trainer.device),
                   "precision": trainer.precision, "data_variant": provenance["variant"],
                   "model_width": params.model.width, "pretrained": params.model.pretrained,
                   "mlflow_run_id": tracker.run_id}
        write_outputs(name, run, summary, f"{LABELS[name]} ({provenance['variant']})", tracker)
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    checkpoint.remove()
    print(f"{name}: test {summary['test_full']:.2%}, held-out {summary['test_100']:.2%}, "
          f"{summary['time_s']:.0f}s, proxy {summary['flops_proxy_T']:.3g} TFLOPs, "
          f"executed {summary['flops_executed_T']:.3g} TFLOPs")


if __name__ == "__main__":
    main()
