"""Our fast step held to the original's, step for step, the runner across phase boundaries, and
the scorer drawn as the original draws it, and calibrated on as sorted with.

Our step (fused Adam with a tensor learning rate, one flat gradient buffer, E/C and sparsity summed
on the device) and the original's as `sel/speed/original.py` re-creates it (stock Adam, the learning rate
set from `loss.item()`, a loop over parameters) take the very batches our trainer drew (recorded as
it trained, so no augmentation is left to chance), on the CPU in fp32 with BatchNorm in train mode.
Each of the original's steps starts from the weights our step started from: fused and unfused Adam
leave weights a rounding apart, and a gradient entry that close to gamma would flip the mask and
send the two runs apart for a reason that is no mistake. From there both steps must give the same
weights, BatchNorm statistics, Adam moments and step count, learning rate, loss, E, C and sparsity.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from builders import make_arrays
from pipeline import calibrate
from sel.speed import original
from sel.scoring.calibration import calibrate_gamma
from sel.method.curriculum import Pools
from sel.data.dataset import Cifar
from sel.experiments.plan import ExperimentRun, make_trainer, plan
from sel.config.params import ModelParams, load_params
from sel.train.model import fresh_model
from sel.config.protocols import with_overrides
from sel.scoring.scorer import scoring_trainer, train_scorer
from sel.train.training import DENSE, SEL, Trainer, unpack_sums

CPU = torch.device("cpu")
SEED = 5
# Temperatures that differ from each other and from the default, so that the E/C of a step shows
# which one it used.
TINY = {"model.width": 4, "model.pretrained": False, "train.device": "cpu", "train.precision": "fp32",
        "train.batch_size": 16, "data.held_out_per_class": 2, "sel.temperature": 2.0,
        "train.ec_temperature": 1.0, "sel.epochs_per_stage": 1,
        "sel.stages": [{"name": "easy", "start": 0.0, "end": 0.5}, {"name": "hard", "start": 0.5, "end": 1.0}],
        "experiments.warmup_sel.warmup_epochs": 1, "experiments.warmup_sel.warmup_per_class": 4}


class StepRecorder:
    """Stands in front of a Trainer's step and keeps, per step, the batch it was given and the
    state it started from, then what it did: the learning rate and gamma it applied, what it added
    to the sums, the state it left. The real step runs unchanged."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.step, self.steps = trainer, trainer._step, []
        trainer._step = self

    def __call__(self, x, y, rule):
        t = self.trainer
        sums, before = t.sums.clone(), copy.deepcopy(t.model.state_dict())
        self.step(x, y, rule)
        added = unpack_sums((t.sums - sums).tolist(), t.n_classes)
        self.steps.append({"x": x.clone(), "y": y.clone(), "before": before,
                           "lr": t.optimizer.param_groups[0]["lr"].item(), "gamma": t.gamma.item(),
                           **added, **state_after(t.model, t.optimizer)})


def state_after(model, optimizer) -> dict:
    """The weights and BatchNorm statistics, and Adam's moments and step count per parameter."""
    adam = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()]
    return {"after": copy.deepcopy(model.state_dict()), "adam": adam}


def original_steps(model, steps: list[dict], gammas: list, temperature: float, base_lr: float) -> list[dict]:
    """The original's steps on the recorded batches, each from the state our step started from,
    with one Adam throughout (as its warm-up and stages share one); a gamma of None is a dense
    step."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr)
    out = []
    for step, gamma in zip(steps, gammas):
        model.load_state_dict(step["before"])  # in place: Adam keeps its parameters and moments
        result = original.train_step(model, optimizer, step["x"], step["y"], CPU, gamma, base_lr, temperature)
        out.append({**result, "lr": optimizer.param_groups[0]["lr"], **state_after(model, optimizer)})
    return out


def assert_same_step(ours: dict, theirs: dict, sel: bool) -> None:
    """What a step did, ours against the original's. The state to what fused and unfused Adam
    differ by: a step moves a weight by ~1e-3, so a mistake shows orders of magnitude above."""
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
    assert ours["correct"] == theirs["correct"]
    assert ours["lr"] == pytest.approx(theirs["lr"], rel=1e-6)
    if sel:
        assert ours["E"] == pytest.approx(list(theirs["E"]), abs=1e-5)
        assert ours["C"] == pytest.approx(list(theirs["C"]), abs=1e-5)
        assert ours["sparsity"] == pytest.approx(theirs["sparsity"], abs=1e-6)
    assert ours["after"].keys() == theirs["after"].keys()
    for key, value in theirs["after"].items():
        torch.testing.assert_close(ours["after"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    for mine, ref in zip(ours["adam"], theirs["adam"]):
        assert float(mine["step"]) == float(ref["step"])
        # exp_avg ~ 0.1 |g| (1e-5 and up), exp_avg_sq ~ 1e-3 g^2 (non-negative, no cancellation)
        torch.testing.assert_close(mine["exp_avg"], ref["exp_avg"], atol=1e-10, rtol=1e-5)
        torch.testing.assert_close(mine["exp_avg_sq"], ref["exp_avg_sq"], atol=0, rtol=1e-5)


def assert_continuous(steps: list[dict]) -> None:
    """Each step starts from the state the one before left: the original's steps start from ours,
    so nothing may change the weights between steps unseen (at a phase boundary, say)."""
    for before, after in zip(steps, steps[1:]):
        assert all(torch.equal(after["before"][k], v) for k, v in before["after"].items())


def tiny() -> tuple:
    params = with_overrides({}, TINY)
    return params, Cifar(*make_arrays(8, 3, seed=SEED))


@pytest.mark.parametrize("update", [DENSE, SEL])
def test_our_step_is_the_originals_step(update):
    """Three steps (16, 16 and 8 images) of our SEL or dense step against the original's."""
    params, data = tiny()
    spec = params.experiments["sel95" if update == SEL else "baseline"]
    temperature = params.sel.temperature if update == SEL else params.train.ec_temperature
    gamma = calibrate_gamma(make_trainer(params, data, spec, SEED), 32, 40, "train")["gamma"]
    trainer = make_trainer(params, data, spec, SEED)
    assert trainer.temperature == temperature
    recorder = StepRecorder(trainer)
    scale = params.sel.lr_loss_scale if update == SEL else 0.0
    trainer.train_epoch(torch.arange(40), update, gamma, lr_loss_scale=scale)
    ours = recorder.steps
    theirs = original_steps(copy.deepcopy(trainer.model), ours, [gamma if update == SEL else None] * 3,
                            temperature, params.train.lr)
    assert [len(s["y"]) for s in ours] == [16, 16, 8]
    for mine, ref in zip(ours, theirs):
        assert_same_step(mine, ref, update == SEL)
    assert_continuous(ours)
    # guards: every weight tensor moved, and in SEL the mask and the loss-scaled lr did something
    initial = ours[0]["before"]
    assert all(not torch.equal(initial[name], p) for name, p in trainer.model.named_parameters())
    if update == SEL:
        assert all(0.2 < s["sparsity"] < 0.95 and s["gamma"] == pytest.approx(gamma, rel=1e-6) for s in ours)
        assert len({s["lr"] for s in ours}) == 3 and min(s["lr"] for s in ours) > params.train.lr
    else:
        assert all(s["lr"] == pytest.approx(params.train.lr) for s in ours)


def test_the_runner_carries_adam_across_phases_and_decays_gamma():
    """warmup_sel on tiny data: a dense warm-up, then two SEL stages, an epoch each, driven by the
    runner. One Adam throughout (its step count and moments go on), each stage applies its own
    decayed gamma, each row's E/C is the mean over its steps at sel.temperature, and every step is
    the original's step on the same batch."""
    params, data = tiny()
    spec = params.experiments["warmup_sel"]
    gamma = calibrate_gamma(make_trainer(params, data, spec, SEED), 32, 40, "train")["gamma"]
    pools = Pools.shuffled(data.y_train, 10, SEED)
    phases = plan(spec, params, len(data.y_train), pools, gamma)
    assert [p.name for p in phases] == ["warmup", "easy", "hard"]
    trainer = make_trainer(params, data, spec, SEED)
    recorder = StepRecorder(trainer)
    run = ExperimentRun("warmup_sel", trainer, phases, data.classes, out=None)
    seen = []

    def after_epoch(run, row):
        state = trainer.optimizer.state[trainer.grads.params[0]]
        seen.append({"optimizer": trainer.optimizer, "adam_step": int(state["step"]), "steps": len(recorder.steps)})

    run.run(after_epoch)
    steps = recorder.steps
    assert [s["steps"] for s in seen] == [3, 6, 9]  # 40 images a phase, batches of 16

    # one Adam: the same object, its step count going on (its moments: compared below)
    assert all(s["optimizer"] is trainer.optimizer for s in seen)
    assert [s["adam_step"] for s in seen] == [3, 6, 9]

    # the gamma each step applied: none in the warm-up, then gamma * (1 - 0.3 * s / 2) per stage
    n_stages, decay = len(params.sel.stages), params.sel.gamma_decay
    gammas = [None] * 3 + [gamma * (1 - decay * s / n_stages) for s in (0, 1) for _ in range(3)]
    assert gammas[6] < gammas[3]
    for step, want in zip(steps[3:], gammas[3:]):
        assert step["gamma"] == pytest.approx(want, rel=1e-6)
    assert [row["sparsity/gamma"] for row in run.rows] == pytest.approx([0.0, gammas[3], gammas[6]], rel=1e-6)

    # every step is the original's step on the same batch, its Adam carried from the step before
    assert_continuous(steps)
    theirs = original_steps(copy.deepcopy(trainer.model), steps, gammas, params.sel.temperature, params.train.lr)
    for k, (mine, ref) in enumerate(zip(steps, theirs)):
        assert_same_step(mine, ref, gammas[k] is not None)

    # each row: the sums over its steps, E/C and sparsity as means over steps
    for row, epoch in zip(run.rows, (theirs[0:3], theirs[3:6], theirs[6:9])):
        assert row["loss/train_loss"] == pytest.approx(sum(r["loss"] for r in epoch) / 40, rel=1e-6)
        assert row["acc/train_acc"] == sum(r["correct"] for r in epoch) / 40
        if row["schedule/stage"] == 0:  # warm-up rows: E = C = 0, as the original
            assert all(row[f"E/{c}"] == 0 and row[f"C/{c}"] == 0 for c in data.classes)
            continue
        e, c = (np.mean([r[k] for r in epoch], axis=0) for k in ("E", "C"))
        assert [row[f"E/{name}"] for name in data.classes] == pytest.approx(e.tolist(), abs=1e-5)
        assert [row[f"C/{name}"] for name in data.classes] == pytest.approx(c.tolist(), abs=1e-5)
        assert row["sparsity/sparsity"] == pytest.approx(np.mean([r["sparsity"] for r in epoch]), abs=1e-6)


def test_dense_runs_record_ec_at_their_own_temperature():
    """baseline and lottery read nothing of sel: their E/C use train.ec_temperature."""
    params, data = tiny()
    for name, want in (("baseline", 1.0), ("lottery", 1.0), ("sel95", 2.0), ("warmup_sel", 2.0)):
        assert make_trainer(params, data, params.experiments[name], SEED).temperature == want, name


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("scorer", ["independent", "shared"])
def test_the_scorer_is_drawn_as_the_original_draws_it(scorer):
    """independent: a model no experiment starts from (the original scored with its first draw
    and trained later ones); shared: the experiments' initial weights. Sort and calibrate build
    the same scorer either way, and the experiments' weights do not depend on the choice."""
    params = with_overrides({}, {**TINY, "sort.scorer": scorer})
    data = Cifar(*make_arrays(2, 2, seed=SEED))
    for_sort, for_calibrate = (scoring_trainer(params, data, SEED).model for _ in range(2))
    experiment = make_trainer(params, data, params.experiments["sel95"], SEED).model
    assert same_weights(for_sort, for_calibrate)
    assert same_weights(for_sort, experiment) == (scorer == "shared")
    assert same_weights(experiment, fresh_model(SEED, ModelParams(width=4, pretrained=False), 10))  # seed, then the first draw


def test_calibrate_uses_the_scorer_sort_trained(tmp_path, monkeypatch):
    """With sort.scorer_epochs > 0, sort scores with a trained scorer, so calibrate computes gamma
    on that trained scorer too (one model for both, as the original), not on the fresh one."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({
        "model": {"width": 4, "pretrained": False}, "train": {"device": "cpu", "batch_size": 16},
        "sort": {"scorer_epochs": 1}, "calibrate": {"batch_size": 16, "mode": "train"}}))
    Path("data").mkdir()
    data = Cifar(*make_arrays(4, 2, seed=SEED))
    data.save(Path("data/cifar10.npz"))
    params = load_params()
    calibrate.main([str(SEED)])

    def gamma(epochs: int) -> float:
        trainer = scoring_trainer(params, Cifar.load("data/cifar10.npz"), SEED)
        train_scorer(trainer, epochs, "test")
        return calibrate_gamma(trainer, 16, params.calibrate.percentile, "train")["gamma"]

    written = json.loads(Path(f"data/seed{SEED}/gamma.json").read_text())["gamma"]
    assert written == gamma(1) != gamma(0)
