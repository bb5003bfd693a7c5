"""airbench's training recipe as train knobs (issue 28): SGD with Nesterov momentum and a BatchNorm
bias lr scale, label smoothing, translate2 and alternating flips, a warm-up before the linear decay
and their end points, the lookahead average, mirror and shifted TTA, the whitening bias held after
N epochs; each step still reads nothing back."""

import copy

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from builders import make_arrays
from conftest import ROOT, refused
from sel.config.params import ModelParams, parse_params
from sel.config.protocols import AIRBENCH93, AIRBENCH_FULL, airbench_recipe, with_overrides, write_params
from sel.core.errors import SelError
from sel.data.augment import AUGMENT, Images
from sel.data.dataset import Cifar, held_out_indices
from sel.experiments.plan import ExperimentRun, Phase, make_trainer, plan, run_steps
from sel.method.curriculum import Pools
from sel.method.flops import flops_per_image
from sel.speed.bench import SyncCounter
from sel.train.model import fresh_model
from sel.train.training import DENSE, Rule, Trainer

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
DATA = Cifar(*make_arrays(10, 2))  # 100 training images, 10 per class
AIRBENCH = ModelParams(arch="airbench", widths=(8, 8, 8), pretrained=False)
SGD = {"optimizer": "sgd_nesterov", "momentum": 0.85, "weight_decay": 1e-3, "bias_lr_scale": 64.0}


def trainer(**recipe) -> Trainer:
    return Trainer(fresh_model(0, AIRBENCH, 10, DATA.x_train), DATA, held_out_indices(DATA.y_test, 1, 10),
                   device=torch.device("cpu"), precision="fp32", lr=0.1, batch_size=16, eval_batch_size=64,
                   seed=0, **recipe)


def test_sgd_nesterov_trains_batchnorm_biases_at_the_scaled_lr():
    t = trainer(**SGD)
    plain, biases = t.optimizer.param_groups
    assert isinstance(t.optimizer, torch.optim.SGD) and plain["nesterov"] and plain["momentum"] == 0.85
    bn = {id(m.bias) for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {id(p) for p in biases["params"]} == bn
    assert id(t.model.whiten.weight) not in {id(p) for p in plain["params"]}  # fixed by the data: no decay
    assert biases["weight_decay"] == pytest.approx(1e-3 / 64)
    t.set_lr(torch.tensor(0.5))
    assert plain["lr"].item() == pytest.approx(0.5) and biases["lr"].item() == pytest.approx(32.0)


def test_label_smoothing_is_torchs():
    t = trainer(label_smoothing=0.2)
    x, y = t.train_set.plain(torch.arange(16)), t.train_set.y[:16]
    expected = F.cross_entropy(copy.deepcopy(t.model)(x), y, label_smoothing=0.2)
    assert expected.item() != pytest.approx(F.cross_entropy(copy.deepcopy(t.model)(x), y).item())
    t._step(x, y, Rule(DENSE, False, 0.0, None, False, None))
    assert t.sum_parts["loss"].item() / 16 == pytest.approx(expected.item(), rel=1e-5)


def test_translate2_moves_images_by_at_most_two_pixels_with_reflection():
    x = np.arange(32 * 32 * 3, dtype=np.int64).reshape(1, 32, 32, 3) % 251
    images = Images(np.repeat(x, 400, 0).astype(np.uint8), np.zeros(400, dtype=np.int64), torch.device("cpu"),
                    torch.contiguous_format, **AUGMENT["translate2"])
    out = images.augmented(torch.arange(400), torch.Generator().manual_seed(0))
    base = images.plain(torch.arange(1))[0]
    padded = F.pad(base[None], (2, 2, 2, 2), mode="reflect")[0]
    seen = set()
    for img in out:
        match = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if torch.equal(img, (lambda c: c.flip(2) if f else c)(padded[:, dy:dy + 32, dx:dx + 32]))]
        assert match, "not a reflection-padded crop within 2 pixels"
        seen.add(match[0])
    assert len(seen) == 50  # every offset and flip is drawn


@pytest.mark.parametrize("knobs, factors", [
    ({"warmup": 0.25}, [(0, 0.0), (10, 0.4), (25, 1.0), (50, 50 / 75), (99, 1 / 75)]),
    # airbench's end points: from 0.2 x lr up to it, then down towards 0.07 x lr
    ({"warmup": 0.25, "warmup_from": 0.2, "lr_end": 0.07},
     [(0, 0.2), (10, 0.2 + 0.8 * 0.4), (25, 1.0), (50, 0.07 + 0.93 * 50 / 75), (99, 0.07 + 0.93 / 75)]),
    ({"lr_end": 0.07}, [(0, 1.0), (50, 0.07 + 0.93 * 0.5), (99, 0.07 + 0.93 / 100)])])
def test_the_warmup_rises_to_the_base_lr_then_decays_to_its_end(knobs, factors):
    t = trainer(**knobs)
    t.lr_slope.fill_(1 / 100)
    for step, factor in factors:
        t.step_index.fill_(step)
        assert t.step_lr(torch.tensor(0.0), 0.0, True).item() == pytest.approx(0.1 * factor, rel=1e-5, abs=1e-9)


def test_tta_averages_the_mirror_and_shifts_and_counts_their_forwards():
    runs = []
    for level in (0, 1, 2):
        t = trainer(tta_level=level)
        run = ExperimentRun("tta", t, [Phase("dense", 1, np.arange(100), 0)], DATA.classes, out=None)
        runs.append(run.step())
    _, eval_flops = flops_per_image(trainer().model)
    assert runs[0]["compute/flops_eval_T"] * 1e12 == pytest.approx(eval_flops * len(DATA.y_test))
    assert runs[1]["compute/flops_eval_T"] == pytest.approx(2 * runs[0]["compute/flops_eval_T"])
    assert runs[2]["compute/flops_eval_T"] == pytest.approx(6 * runs[0]["compute/flops_eval_T"])
    # the same training each way: its accuracy without tta is the plain run's
    assert "acc/test_no_tta" not in runs[0]
    assert runs[1]["acc/test_no_tta"] == runs[2]["acc/test_no_tta"] == runs[0]["acc/test_full"]
    # the views, built here by indexing: shifted up-left, image row i is row |i - 1|; down-right,
    # row i + 1, the last reflected back to row 30
    t = trainer(tta_level=2)
    t.model.eval()
    x = t.test_set.plain(torch.arange(20))
    f = lambda v: t.model(v).float()  # noqa: E731
    up_left, down_right = torch.tensor([1, *range(31)]), torch.tensor([*range(1, 32), 30])
    shift = lambda v, i: v[:, :, i][:, :, :, i]  # noqa: E731
    expected = (f(x) + f(x.flip(3))) / 4 + sum(f(shift(v, i)) + f(shift(v, i).flip(3))
                                                 for v in (x,) for i in (up_left, down_right)) / 8
    alone, logits = t.tta_logits(x, False)
    assert torch.allclose(alone, f(x)) and torch.allclose(logits, expected, atol=1e-6)
    t.tta_level = 1
    assert torch.allclose(t.tta_logits(x, False)[1], (f(x) + f(x.flip(3))) / 2, atol=1e-6)


def test_lookahead_moves_the_weights_to_their_average_every_five_steps_and_ends_on_it():
    """A 7-step run, an epoch of 5 steps and one of 2: at step 5 the float state (weights and
    BatchNorm statistics) and its average each become avg + (1 - d) (w - avg), d =
    0.95^5 (5/7)^3; the run ends on that average, the last two steps' weights dropped."""
    def state(t):
        return [v.clone() for v in t.model.state_dict().values() if v.is_floating_point()]

    ahead, plain = trainer(**SGD, lookahead=True), trainer(**SGD)
    run = ExperimentRun("ahead", ahead, [Phase("first", 1, np.arange(80), 0), Phase("last", 1, np.arange(80, 100), 0)],
                        DATA.classes, out=None)
    average = state(plain)
    run.step()
    plain.train_epoch(torch.arange(80))
    d = 0.95 ** 5 * (5 / 7) ** 3
    average = [a + (1 - d) * (w - a) for a, w in zip(average, state(plain))]
    for a, w in zip(average, state(ahead)):
        assert torch.allclose(a, w, atol=1e-6)
    run.step()
    plain.train_epoch(torch.arange(80, 100))
    for a, w, trained in zip(average, state(ahead), state(plain)):
        assert torch.allclose(a, w, atol=1e-6)
    assert not all(torch.allclose(a, trained) for a, trained in zip(average, state(plain)))


def test_alternating_flips_flip_half_the_images_and_switch_each_epoch(monkeypatch):
    t = trainer(flip="alternate", augment="translate2")
    augmented, flips = t.train_set.augmented, {}

    def recorded(idx, generator, flip=None):
        for i, f in zip(idx.tolist(), flip.tolist()):
            flips.setdefault(i, []).append(f)
        return augmented(idx, generator, flip)

    monkeypatch.setattr(t.train_set, "augmented", recorded)
    for _ in range(3):
        t.train_epoch(torch.arange(100))
    assert all(f[0] != f[1] and f[0] == f[2] for f in flips.values())
    assert 30 <= sum(f[0] for f in flips.values()) <= 70
    images = Images(DATA.x_train, DATA.y_train, torch.device("cpu"), torch.contiguous_format, padding=0)
    idx = torch.arange(4)
    assert torch.equal(images.augmented(idx, torch.Generator(), torch.ones(4, dtype=torch.bool)),
                       images.plain(idx).flip(3))


def test_a_resumed_run_of_the_whole_recipe_goes_on_as_the_uninterrupted_one():
    """The lookahead average, the steps it counts and the epoch's flips are in the state."""
    def run_of():
        t = trainer(**SGD, lookahead=True, flip="alternate", augment="translate2")
        return ExperimentRun("ahead", t, [Phase("dense", 3, np.arange(100), 0)], DATA.classes, out=None)

    whole, first, resumed = run_of(), run_of(), run_of()
    whole.run()
    first.step()
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    resumed.run()
    for a, b in zip(whole.trainer.model.state_dict().values(), resumed.trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_whitening_bias_is_held_after_its_epochs():
    t = trainer(**SGD)
    run = ExperimentRun("freeze", t, [Phase("dense", 3, np.arange(100), 0)], DATA.classes, out=None,
                        freeze_whiten_after=1)
    run.step()
    held = t.model.whiten.bias.detach().clone()
    assert not torch.equal(held, torch.zeros_like(held))  # it trained in epoch 1
    run.step()
    run.step()
    assert torch.equal(t.model.whiten.bias, held)


def test_a_step_of_the_recipe_reads_nothing_back():
    t = trainer(**SGD, label_smoothing=0.2, augment="translate2", warmup=0.2, warmup_from=0.2, lr_end=0.07,
                flip="alternate", lookahead=True)
    with SyncCounter() as counter:
        t.train_epoch(torch.arange(100), lr_line=(0.0, 1 / 7), weighted=True, progress=(0.0, 1 / 7), ends_run=True)
    assert counter.count == 0


@pytest.mark.parametrize("key, value", [("label_smoothing", 1.0), ("label_smoothing", -0.1),
                                        ("optimizer", "lion"), ("batch_size", 0), ("momentum", 1.0),
                                        ("momentum", -0.1), ("augment", "crop2"), ("warmup_fraction", 1.0),
                                        ("warmup_from", 1.5), ("lr_end", 1.0), ("flip", "sometimes")])
def test_bad_recipe_values_are_refused_in_one_line(key, value):
    raw = copy.deepcopy(RAW)
    raw["train"][key] = value
    with refused(f"train.{key}"):
        parse_params(raw)


@pytest.mark.parametrize("key, value, needs", [("tta_translate", True, "set train.tta=true"),
                                                ("warmup_from", 0.2, "set train.warmup_fraction")])
def test_a_knob_without_the_one_it_needs_is_refused_in_one_line(key, value, needs):
    raw = copy.deepcopy(RAW)
    raw["train"][key] = value
    with refused(f"train.{key}", needs):
        parse_params(raw)


def test_the_airbench_recipe_and_airbench93_parse():
    p = with_overrides(RAW, airbench_recipe())
    assert (p.model.arch, p.train.optimizer, p.train.batch_size) == ("airbench", "sgd_nesterov", 1024)
    assert p.train.lr == pytest.approx(1.5, rel=1e-4)
    p = with_overrides(RAW, AIRBENCH93)
    assert (p.train.flip, p.train.lookahead, p.train.tta_translate, p.train.lr_end) == ("alternate", True, True, 0.07)
    assert p.experiments["baseline"].epochs == 11 and p.train_stages.names() == ("baseline",)


def test_an_experiments_lr_scale_and_a_curriculums_linear_line():
    """SEL on airbench's SGD: its loss scaling multiplies the recipe's line, from a scaled base lr."""
    p = with_overrides(RAW, {**airbench_recipe(), "experiments.sel95": {"lr_schedule": "linear", "lr_scale": 0.25},
                             "experiments.dense_at_sel95.lr_schedule": "linear", "data.held_out_per_class": 1})
    spec = p.experiments["sel95"]
    data = Cifar(*make_arrays(40, 2))
    t = make_trainer(p, data, spec, 0)
    assert t.base_lr == pytest.approx(p.train.lr * 0.25)
    phases = plan(spec, p, len(data.y_train), Pools.shuffled(data.y_train, 10, 0), gamma=0.0)
    steps = sum(len(epoch) for epoch in run_steps(phases, p.train.batch_size))
    assert {phase.lr_decay_steps for phase in phases} == {steps}  # one line over every stage's steps
    for value in (0, -1):
        with pytest.raises(SelError, match="experiments.sel95.lr_scale"):
            with_overrides(RAW, {"experiments.sel95": {"lr_scale": value}})


def test_a_protocol_written_into_params_yaml_keeps_its_comments_and_refuses_a_broken_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    write_params(AIRBENCH_FULL, path)
    written = path.read_text()
    assert written.startswith("# Every knob of the benchmark") and "# every experiment (and sort" in written
    assert parse_params(yaml.safe_load(written)) == with_overrides(RAW, AIRBENCH_FULL)
    path.write_text("seeds: [")
    with pytest.raises(SelError, match="params.yaml: cannot read it as YAML") as error:
        write_params(AIRBENCH_FULL, path)
    assert "\n" not in str(error.value) and path.read_text() == "seeds: ["
