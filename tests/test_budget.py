"""The budget-matched dense control (issue 22): a linear learning rate that reaches zero as the
run ends, a budget of training images (a fraction, or another experiment's executed images,
from its plan alone), and bad declarations refused in one line."""

import copy
import math

import numpy as np
import pytest
import torch
import yaml

from builders import make_arrays
from conftest import ROOT, refused
from sel.core.errors import SelError
from sel.data.dataset import Cifar, held_out_indices
from sel.experiments.plan import ExperimentRun, check_plan, executed_images, plan, prep_flops
from sel.method.curriculum import Pools
from sel.config.params import ModelParams, parse_params
from sel.speed.bench import SyncCounter
from sel.train.model import fresh_model
from sel.train.training import Trainer

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
DATA = Cifar(*make_arrays(10, 2))  # 100 training images, 10 per class
COUNTS = np.bincount(DATA.y_train, minlength=10)
BATCH = 16


def params_with(**experiments):
    """params.yaml's, tiny, with `experiments` (new ones listed under train_stages.budget if their
    budget names another experiment, else under train_stages.sel)."""
    raw = copy.deepcopy(RAW)
    raw["model"] = {"width": 4, "pretrained": False}
    raw["data"] = {"held_out_per_class": 1}
    raw["train"]["batch_size"] = BATCH
    raw["sel"].update(epochs_per_stage=1, samples_per_class=3)
    raw["experiments"].update(experiments)
    for n, spec in experiments.items():
        if n not in RAW["experiments"]:
            raw["train_stages"]["budget" if isinstance(spec.get("budget"), str) else "sel"].append(n)
    return parse_params(raw)


def tiny_run(params, name: str) -> ExperimentRun:
    spec = params.experiments[name]
    pools = Pools.shuffled(DATA.y_train, 10, seed=42) if spec.recipe == "curriculum" else None
    phases = plan(spec, params, len(DATA.y_train), pools, 1e-4, COUNTS, seed=42)
    check_plan(name, spec, phases, pools, BATCH)
    trainer = Trainer(fresh_model(42, ModelParams(width=4, pretrained=False), 10), DATA, held_out_indices(DATA.y_test, 1, 10),
                      device=torch.device("cpu"), precision="fp32", lr=1e-3, batch_size=BATCH,
                      eval_batch_size=64, seed=42)
    run = ExperimentRun(name, trainer, phases, DATA.classes, out=None)
    run.add_prep(prep_flops(spec, params, len(DATA.y_train), run.train_flops, run.eval_flops, 10), 0.0)  # as the stage
    return run


def test_a_linear_learning_rate_runs_its_last_step_at_lr_over_t_and_ends_at_zero():
    params = params_with(linear={"recipe": "dense", "epochs": 3, "lr_schedule": "linear"})
    run = tiny_run(params, "linear")
    steps = 3 * math.ceil(100 / BATCH)
    assert [p.lr_decay_steps for p in run.phases] == [steps]
    run.run()
    trainer = run.trainer
    last = trainer.optimizer.param_groups[0]["lr"].item()  # the lr the last step ran at
    assert last == pytest.approx(1e-3 / steps)  # counted over the run, not reset each epoch
    assert trainer.step_lr(torch.tensor(0.0), 0.0, True).item() == pytest.approx(0.0, abs=1e-9)


def test_the_linear_lr_multiplies_the_loss_scaled_one_on_the_device():
    trainer = tiny_run(params_with(), "baseline").trainer
    trainer.lr_start.fill_(1 / 4)
    with SyncCounter() as counter:
        lr = trainer.step_lr(torch.tensor(0.5), 2.0, True)
    assert counter.count == 0
    assert lr.item() == pytest.approx(1e-3 * (1 - 1 / 4) * (1 + 2.0 * 0.5))
    with SyncCounter() as counter:
        trainer.train_epoch(torch.arange(100), lr_loss_scale=2.0, lr_line=(0.0, 1 / 20))
    assert counter.count == 0


def test_a_constant_schedule_keeps_the_base_lr():
    run = tiny_run(params_with(), "baseline")
    assert run.phases[0].lr_decay_steps is None
    run.trainer.train_epoch(torch.arange(100), lr_line=run.lr_line(run.phases[0], 7))
    assert run.trainer.optimizer.param_groups[0]["lr"].item() == pytest.approx(1e-3)


def test_a_fraction_budget_runs_whole_epochs_then_a_seeded_subset():
    params = params_with(half={"recipe": "dense", "epochs": 3, "budget": 0.5, "lr_schedule": "linear"})
    phases = plan(params.experiments["half"], params, 100, counts=COUNTS, seed=42)
    assert [(p.name, p.epochs, len(p.indices)) for p in phases] == [("dense", 1, 100), ("dense_part", 1, 50)]
    again = plan(params.experiments["half"], params, 100, counts=COUNTS, seed=42)
    other = plan(params.experiments["half"], params, 100, counts=COUNTS, seed=43)
    assert np.array_equal(phases[1].indices, again[1].indices)
    assert not np.array_equal(phases[1].indices, other[1].indices)
    assert phases[0].lr_decay_steps == phases[1].lr_decay_steps == math.ceil(100 / BATCH) + math.ceil(50 / BATCH)


def test_a_budget_named_after_sel95_executes_its_flops_its_sort_and_calibration_passes_included():
    """Both tiny runs train; params.yaml's dense_at_sel95 executes what sel95 executed, and that
    holds the forward of every training image that sorting scored and calibration's one batch."""
    params = params_with()
    sel95, dense = tiny_run(params, "sel95"), tiny_run(params, "dense_at_sel95")
    train, evaluation = sel95.train_flops, sel95.eval_flops
    prep = 100 * evaluation + params.calibrate.batch_size * train
    assert sel95.totals["flops_executed"] == pytest.approx(prep)  # counted before the first epoch
    sel95.run()
    dense.run()
    assert executed_images(sel95.phases) == 120  # windows of 2+3+2+2+3 of 10 per class
    assert executed_images(dense.phases) == 120 + round(prep / train)
    assert sel95.summary()["compute/prep_flops_executed_T"] == pytest.approx(prep / 1e12)
    assert dense.summary()["compute/flops_executed_T"] == pytest.approx(sel95.summary()["compute/flops_executed_T"],
                                                                       abs=train / 1e12)


def test_a_budget_named_after_a_selective_run_executes_its_flops_candidate_forwards_included():
    params = params_with(selective={"recipe": "dense", "epochs": 2, "selective_keep": 0.5, "lr_schedule": "linear",
                                    "selective_start": 0.0, "selective_end": 1.0, "selective_interrupt": None},
                         at_selective={"recipe": "dense", "epochs": 2, "lr_schedule": "linear",
                                       "budget": "selective"})
    selective, dense = tiny_run(params, "selective"), tiny_run(params, "at_selective")
    selective.run()
    dense.run()
    executed = selective.summary()["compute/flops_executed_T"]
    # 200 candidates forwarded, 100 trained: between the 100 trained images and all 200
    assert 100 < executed_images(dense.phases) < 200
    assert dense.summary()["compute/flops_executed_T"] == pytest.approx(executed, abs=dense.train_flops / 1e12)


def test_a_budget_larger_than_the_run_is_refused_in_one_line():
    params = params_with(short={"recipe": "dense", "epochs": 1, "budget": "sel95"})
    with refused("experiments.short.budget = 'sel95': 282 training images, more than its 1 epochs x 100"):
        tiny_run(params, "short")


@pytest.mark.parametrize("experiment, message", [
    ({"recipe": "dense", "budget": 0}, "experiments.x.budget = 0: must be a fraction in (0, 1]"),
    ({"recipe": "dense", "budget": 1.5}, "experiments.x.budget = 1.5: must be a fraction in (0, 1]"),
    ({"recipe": "dense", "budget": "nope"}, "experiments.x.budget = 'nope': no such experiment"),
    ({"recipe": "dense", "budget": "x"}, "experiments.x.budget = 'x': must name another experiment"),
    ({"recipe": "dense", "budget": "half"}, "experiments.x.budget = 'half': must name another experiment"),
    ({"recipe": "dense", "lr_schedule": "cosine"}, "experiments.x.lr_schedule = 'cosine': must be one of constant | linear"),
    ({"recipe": "lottery", "lr_schedule": "linear"}, "experiments.x.lr_schedule = 'linear': not read by recipe lottery"),
    ({"recipe": "lottery", "budget": 0.5}, "experiments.x.budget = 0.5: not read by recipe lottery"),
])
def test_bad_budgets_and_schedules_name_the_key(experiment, message):
    with refused(message):
        params_with(x=experiment, half={"recipe": "dense", "budget": 0.5})


def test_a_budget_naming_another_experiment_belongs_in_the_stage_that_depends_on_it():
    """train_budget depends on every experiment's knobs and on sel.*: a run whose budget is another
    experiment's plan is refused anywhere else, and nothing else is listed there."""
    raw = copy.deepcopy(RAW)
    raw["train_stages"]["budget"].remove("dense_at_sel95")
    raw["train_stages"]["dense"].append("dense_at_sel95")
    with pytest.raises(SelError, match=r"train_stages.dense.13 = 'dense_at_sel95': its budget is experiment "
                                       r"sel95's plan: list it under train_stages.budget"):
        parse_params(raw)
    raw = copy.deepcopy(RAW)
    raw["train_stages"]["dense"].remove("baseline_linear")
    raw["train_stages"]["budget"].append("baseline_linear")
    with pytest.raises(SelError, match="train_stages.budget.8 = 'baseline_linear': train_budget runs dense"):
        parse_params(raw)
    raw["experiments"]["baseline_linear"]["budget"] = 0.5  # a fraction: its own plan, train_dense's
    raw["train_stages"]["budget"].remove("baseline_linear")
    raw["train_stages"]["dense"].append("baseline_linear")
    parse_params(raw)
