"""Typed parameters: params.yaml is read once and every key checked before any work starts.

Each field carries its help text and its check, so a bad value fails with one line that names
the key, the value and what is allowed. Names and defaults follow the original protocol.
"""

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sel.core.cli import shorten
from sel.core.errors import SelError
from sel.config.names import check_name

ORIGINALS = ("baseline", "lottery", "sel95", "warmup_sel")
RECIPES = ("dense", "lottery", "curriculum")
LR_SCHEDULES = ("constant", "linear")

# A name that reaches shell commands, paths, MLflow keys and the results page (sel.config.names): the
# annotation on experiments, train_stages, attribution and curriculum stages.
Name = typing.NewType("Name", str)


def _knob(default, help, check=None, may_be_empty=False):
    """A field with its help text and an optional check returning what is allowed, or None;
    `may_be_empty`: a list knob that may be [] (every other list may not)."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, "check": check, "may_be_empty": may_be_empty})


def _at_least(lo):
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _between(lo, hi):
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _one_of(*choices):
    shown = " | ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    return lambda v: None if v in choices and type(v) in {type(c) for c in choices} \
        else f"must be one of {shown}"


def _device(v):
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) else "must be auto, cpu, cuda or cuda:N"


def _positive_or_null(v):
    return None if v is None or v >= 1 else "must be >= 1, or null for all"


@dataclass(frozen=True)
class DataParams:
    source: str = _knob("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                        "URL or path (relative to the project root) of the data",
                        lambda v: None if v.strip() else "must name a URL, an archive or a folder")
    md5: str | None = _knob("auto", "auto, an md5 to verify against, or null (no check)",
                            lambda v: None if v is None or v == "auto"
                            or re.fullmatch(r"[0-9a-fA-F]{32}", v)
                            else "must be auto, null or 32 hex digits")
    train_per_class: int | None = _knob(None, "first k training images per class", _positive_or_null)
    test_per_class: int | None = _knob(None, "first k test images per class", _positive_or_null)
    held_out_per_class: int = _knob(100, "first k test images per class form the held-out subset",
                                    _at_least(1))
    val_per_class: int = _knob(0, "last k training images per class (of all the source's, in dataset order) "
                               "form the validation split, never trained on, on which time-to-accuracy is "
                               "read (0: none, the original protocol)", _at_least(0))


@dataclass(frozen=True)
class ModelParams:
    arch: str = _knob("resnet18", "architecture: resnet18 | airbench (docs/pipeline.md)",
                      _one_of("resnet18", "airbench"))
    width: int = _knob(64, "resnet18: channels of the first stage (64 = ResNet-18)", _at_least(1))
    widths: tuple[int, ...] = _knob(lambda: (64, 128, 128), "airbench: channels of its three conv "
                                    "groups (airbench93: 64/128/128; airbench94: 64/256/256)",
                                    lambda v: None if len(v) == 3 and min(v) >= 1
                                    else "must be 3 integers >= 1")
    pretrained: bool = _knob(True, "resnet18: load ImageNet weights through torchvision (width 64 only)")
    whiten_bias_epochs: int | None = _knob(None, "airbench: freeze the whitening conv's bias after this many "
                                           "epochs of the run (airbench: 3; null: trained throughout)",
                                           lambda v: None if v >= 0 else "must be >= 0, or null")


@dataclass(frozen=True)
class TrainParams:
    device: str = _knob("auto", "auto | cpu | cuda | cuda:N", _device)
    batch_size: int = _knob(64, "training batch size", _at_least(1))
    lr: float = _knob(1e-3, "learning rate of the optimizer, for the batch's mean loss",
                      lambda v: None if v > 0 else "must be > 0")
    optimizer: str = _knob("adam", "adam (fused Adam, the original's) | sgd_nesterov (SGD with Nesterov "
                           "momentum, airbench's)", _one_of("adam", "sgd_nesterov"))
    momentum: float = _knob(0.85, "sgd_nesterov: momentum (airbench: 0.85)",
                            lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    weight_decay: float = _knob(0.0, "sgd_nesterov: L2 weight decay, torch's (BatchNorm biases take it divided "
                                "by bias_lr_scale, so lr * decay is the same for all, as airbench)", _at_least(0))
    bias_lr_scale: float = _knob(1.0, "sgd_nesterov: BatchNorm biases train at lr times this (airbench's "
                                 "bias_scaler: 64)", lambda v: None if v > 0 else "must be > 0")
    label_smoothing: float = _knob(0.0, "label smoothing of the training loss (airbench: 0.2); E/C and the "
                                   "selection losses stay plain", lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    augment: str = _knob("crop4", "crop4 (the original's: random crop of the zero-padded-by-4 image, flip) | "
                         "translate2 (airbench's: reflection-padded by 2, flip)", _one_of("crop4", "translate2"))
    warmup_fraction: float = _knob(0.0, "runs with lr_schedule linear: the lr rises linearly from 0 (or "
                                   "warmup_from) over this fraction of the run's steps, then decays linearly "
                                   "to 0 (or lr_end)",
                                   lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    warmup_from: float = _knob(0.0, "with warmup_fraction: the warm-up starts at lr times this (airbench: 0.2)",
                               lambda v: None if 0 <= v <= 1 else "must be in [0, 1]")
    lr_end: float = _knob(0.0, "runs with lr_schedule linear: the decay ends at lr times this (airbench: 0.07)",
                          lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    flip: str = _knob("random", "random (each image flipped with p = 0.5 each epoch) | alternate (airbench's "
                      "altflip: a random half flipped in even epochs, the other half in odd ones)",
                      _one_of("random", "alternate"))
    lookahead: bool = _knob(False, "every 5 steps the weights and BatchNorm statistics move to their running "
                            "average, weighted 0.95^5 (t / T)^3 at step t of T, and end the run as it "
                            "(airbench's LookaheadState)")
    tta: bool = _knob(False, "evaluation averages the logits of each image and its mirror (airbench's "
                      "tta_level 1); the extra forwards count in compute/flops_eval_T")
    tta_translate: bool = _knob(False, "with tta: also each image shifted one pixel up-left and down-right "
                                "(reflection padded), each with its mirror, weighted half against the "
                                "unshifted pair (airbench's tta_level 2: 6 forwards an image)")
    precision: str = _knob("auto", "auto | fp32 | bf16 (autocast)", _one_of("auto", "fp32", "bf16"))
    compile: str | bool = _knob("auto", "torch.compile: auto | true | false",
                                _one_of("auto", True, False))
    cuda_graphs: str | bool = _knob("auto", "capture the training step as a CUDA graph: auto (on "
                                    "for CUDA) | true | false", _one_of("auto", True, False))
    eval_batch_size: int = _knob(1000, "evaluation batch size", _at_least(1))
    val_every: int | None = _knob(None, "evaluate on the validation split every k optimizer steps of the run "
                                  "as well as at every epoch end (null: epoch ends only)",
                                  lambda v: None if v >= 1 else "must be >= 1, or null (epoch ends only)")
    ec_temperature: float = _knob(1.5, "T of the E/C the dense runs (baseline, lottery) record; "
                                  "the SEL runs record theirs at sel.temperature",
                                  lambda v: None if v > 0 else "must be > 0")


@dataclass(frozen=True)
class SortParams:
    scorer: str = _knob("independent", "the model sort and calibrate score with: independent (the "
                        "original's: a draw no experiment starts from) | shared (the experiments' "
                        "initial weights)", _one_of("independent", "shared"))
    # calibrate trains the scorer again rather than reading sort's weights: the same seed and epochs
    # give the same weights (CPU; on CUDA up to its kernels' nondeterminism) with no file between
    # the two stages, and the epochs it runs again are counted (plan.prep_flops)
    scorer_epochs: int = _knob(0, "dense epochs for the scorer before sort scores and calibrate calibrates "
                               "with it, each stage training it alike (0 = fresh model)", _at_least(0))


@dataclass(frozen=True)
class CalibrateParams:
    percentile: float = _knob(40.0, "percentile of |grad| that becomes gamma", lambda v: None if 0 <= v < 100
                              else "must be at least 0 and below 100 (100 would zero every gradient)")
    batch_size: int = _knob(128, "images in the calibration batch", _at_least(1))
    mode: str = _knob("eval", "eval (the original: BatchNorm running stats) | train",
                      _one_of("eval", "train"))


@dataclass(frozen=True)
class Stage:
    name: Name = _knob("stage", "stage name")
    start: float = _knob(0.0, "start fraction of each class's sorted pool", _between(0, 1))
    end: float = _knob(1.0, "end fraction of each class's sorted pool", _between(0, 1))


def _default_stages():
    return tuple(Stage(n, s, e) for n, s, e in [
        ("easy", 0.00, 0.25), ("medium", 0.20, 0.50), ("hard", 0.40, 0.65),
        ("harder", 0.60, 0.82), ("hardest", 0.78, 1.00)])


@dataclass(frozen=True)
class SelParams:
    temperature: float = _knob(1.5, "T in E_c = CE(logits / T)", lambda v: None if v > 0 else "must be > 0")
    lr_loss_scale: float = _knob(2.0, "lr * (1 + lr_loss_scale * loss)", _at_least(0))
    gamma_decay: float = _knob(0.3, "gamma * (1 - gamma_decay * s / n_stages)", _between(0, 1))
    samples_per_class: int = _knob(2000, "at most this many images per class per stage", _at_least(1))
    epochs_per_stage: int = _knob(10, "epochs of each stage", _at_least(0))
    stages: tuple[Stage, ...] = _knob(_default_stages, "curriculum windows, easy to hard")
    gamma_mode: str = _knob("calibrated", "calibrated (gamma.json, decayed by stage) | target (gamma "
                            "follows the gradients to hold sel.target_sparsity)",
                            _one_of("calibrated", "target"))
    target_sparsity: float = _knob(0.95, "fraction of gradient entries zeroed in target mode",
                                   lambda v: None if 0 < v < 1 else "must be in (0, 1)")


SELECTIVE_KEYS = ("selective_keep", "selective_start", "selective_end", "selective_interrupt", "selective_history")
# The knobs each recipe reads; any other key in an experiment is refused, so a typo cannot hide.
RECIPE_KEYS = {
    "dense": {"epochs", "lr_scale", "mask", "loss_scaled_lr", "gamma_mode", "lr_schedule", "budget", *SELECTIVE_KEYS,
              "class_draw", "class_draw_floor", "infobatch_prune", "proxy_keep", "proxy_scale", "proxy_epochs"},
    "lottery": {"pretrain_epochs", "prune_fraction", "epochs", "lr_scale"},
    "curriculum": {"lr_scale", "warmup_epochs", "warmup_per_class", "order", "mask", "loss_scaled_lr", "gamma_mode",
                   "lr_schedule", *SELECTIVE_KEYS},
}


@dataclass(frozen=True)
class Experiment:
    """One training recipe and its knobs. The original's four experiments are `dense`
    (baseline), `lottery` and `curriculum` (sel95, warmup_sel); a control or a user's variant
    is the same recipe with a knob turned (README, "Experiments and controls")."""

    recipe: str = _knob("dense", "dense | lottery | curriculum (the SEL stages)", _one_of(*RECIPES))
    epochs: int = _knob(30, "dense: epochs on every image; lottery: masked epochs after the rewind",
                        _at_least(0))
    pretrain_epochs: int = _knob(15, "lottery: dense epochs before the prune", _at_least(0))
    prune_fraction: float = _knob(0.8, "lottery: fraction of all parameters pruned by magnitude",
                                  lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    lr_scale: float = _knob(1.0, "this experiment's base learning rate is train.lr times this (SEL's loss "
                            "scaling then multiplies it)", lambda v: None if v > 0 else "must be > 0")
    warmup_epochs: int = _knob(0, "curriculum: dense epochs on the easiest images first", _at_least(0))
    warmup_per_class: int = _knob(1000, "curriculum: easiest images per class in the warm-up", _at_least(1))
    order: str = _knob("difficulty", "curriculum: pools sorted by difficulty, or in a seeded random order",
                       _one_of("difficulty", "random"))
    mask: bool | None = _knob(None, "SEL's gradient mask |g| > gamma (null: on for curriculum, off for dense)")
    loss_scaled_lr: bool | None = _knob(None, "lr * (1 + sel.lr_loss_scale * loss) (null: as mask's default)")
    gamma_mode: str | None = _knob(None, "calibrated | target (null: sel.gamma_mode)",
                                   _one_of("calibrated", "target"))
    lr_schedule: str = _knob("constant", "dense, curriculum: constant (the original) | linear (to zero, or "
                             "train.lr_end, over the run's steps, Li et al. 2020, with train.warmup_fraction; "
                             "SEL's loss scaling multiplies it; with infobatch_prune, over its epochs, each "
                             "re-indexed to its pruned steps as InfoBatch's code does)", _one_of(*LR_SCHEDULES))
    budget: float | str | None = _knob(None, "dense: the training images it may use, as a fraction "
                                       "of its epochs x images, or an experiment's name (its executed "
                                       "images); null: all", lambda v: None if isinstance(v, str)
                                       or 0 < v <= 1 else "must be a fraction in (0, 1] or an "
                                       "experiment's name")
    selective_keep: float | None = _knob(None, "selective backward: each step forwards batch_size / keep "
                                         "candidates and trains on batch_size of them, drawn by loss "
                                         "(null: off; docs/savings.md)",
                                         lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    selective_start: float = _knob(0.5, "selective backward: select from this fraction of the run's epochs "
                                   "on (Composer's start)", _between(0, 1))
    selective_end: float = _knob(0.9, "selective backward: ... until this fraction (Composer's end)",
                                 _between(0, 1))
    selective_interrupt: int | None = _knob(2, "selective backward: every k-th step of an epoch trains a "
                                            "plain batch (Composer's interrupt; null: none)",
                                            lambda v: None if v >= 2 else "must be >= 2, or null for no "
                                            "interruption (1 would never select)")
    selective_history: int | None = _knob(None, "selective backward: rank each loss among the last this many "
                                          "candidate losses (the paper's CDF; null: within its batch, as "
                                          "Composer)", _at_least(1))
    class_draw: float | None = _knob(None, "dense, E-driven class draw: each epoch trains on this share of "
                                     "the images, each class's part following its running E (null: off; "
                                     "docs/savings.md)", lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    class_draw_floor: float = _knob(0.5, "dense, E-driven class draw: each class gets at least this "
                                    "fraction of an equal share (1: a uniform random subset)",
                                    lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    infobatch_prune: float | None = _knob(None, "dense, InfoBatch: each epoch leaves out each image whose "
                                          "last loss is below the mean with this chance, the last 12.5% of "
                                          "epochs none (null: off; docs/savings.md)",
                                          lambda v: None if 0 < v < 1 else "must be in (0, 1)")
    proxy_keep: float | None = _knob(None, "dense, proxy-selected subset (airbench96_faster's idea): train only "
                                     "on this share of the images, the hardest by a small proxy's loss "
                                     "(null: off; docs/savings.md)", lambda v: None if 0 < v <= 1
                                     else "must be in (0, 1]")
    proxy_scale: float = _knob(0.5, "proxy-selected subset: the proxy is the run's model with every width "
                               "times this (airbench96_faster's: 0.5, rounded, at least 1 channel)",
                               lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
    proxy_epochs: int = _knob(2, "proxy-selected subset: the proxy's dense epochs on every image before it "
                              "scores them (its passes count in the run's FLOPs and time)", _at_least(0))

    @property
    def masked(self) -> bool:
        return self.mask if self.mask is not None else self.recipe == "curriculum"

    @property
    def scaled_lr(self) -> bool:
        return self.loss_scaled_lr if self.loss_scaled_lr is not None else self.recipe == "curriculum"

    @property
    def reads_sel(self) -> bool:
        """Whether it reads `sel.*` (and the pools and gamma): the original's dense runs do not."""
        return self.recipe == "curriculum" or self.masked or self.scaled_lr


def plan_reads_sel(p: "Params", name: str) -> bool:
    """Whether experiment `name`'s plan reads `sel.*`: its own recipe does, or its budget is the
    executed images of a curriculum, whose windows and epochs are `sel.*`."""
    spec = p.experiments[name]
    budget = p.experiments.get(spec.budget) if isinstance(spec.budget, str) else None
    return spec.reads_sel or (budget is not None and budget.recipe == "curriculum")


def _experiment(**kw) -> dict:
    return {"recipe": "curriculum", **kw}


# The original's four experiments, then the controls that take SEL apart one factor at a time.
DEFAULT_EXPERIMENTS = {
    "baseline": {"recipe": "dense", "epochs": 30},
    "lottery": {"recipe": "lottery", "pretrain_epochs": 15, "prune_fraction": 0.8, "epochs": 30},
    "sel95": _experiment(),
    "warmup_sel": _experiment(warmup_epochs=5, warmup_per_class=1000),
    "sel_dense_grads": _experiment(mask=False),
    "sel_random_order": _experiment(order="random"),
    "sel_constant_lr": _experiment(loss_scaled_lr=False),
    "random_subsets": _experiment(order="random", mask=False, loss_scaled_lr=False),
    "baseline_masked": {"recipe": "dense", "epochs": 30, "mask": True},
    "sel95_target": _experiment(gamma_mode="target"),
    "baseline_linear": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear"},
    # SEL's learning rate does not decay: its dense twin's neither (a twin has its method's schedule)
    "dense_at_sel95": {"recipe": "dense", "epochs": 30, "budget": "sel95"},
    # methods whose savings are executed (docs/savings.md), at their published settings, each
    # decaying linearly to zero over its own run
    "selective_50": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "selective_keep": 0.5},
    "selective_25": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "selective_keep": 0.25},
    "class_draw_50": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "class_draw": 0.5},
    "class_draw_25": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "class_draw": 0.25},
    "infobatch_r50": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "infobatch_prune": 0.5},
    "infobatch_r70": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "infobatch_prune": 0.7},
    # ablation: selective backward on every step from initialisation (a random network's losses)
    "selective_50_every_step": {"recipe": "dense", "epochs": 30, "lr_schedule": "linear", "selective_keep": 0.5,
                                "selective_start": 0.0, "selective_end": 1.0, "selective_interrupt": None},
    # the constant-rate view: a method at a constant learning rate beside its constant-rate twin
    "selective_50_constant": {"recipe": "dense", "epochs": 30, "selective_keep": 0.5},
    "class_draw_50_constant": {"recipe": "dense", "epochs": 30, "class_draw": 0.5},
    "infobatch_r50_constant": {"recipe": "dense", "epochs": 30, "infobatch_prune": 0.5},
    # the dense twins: a dense run at each method's executed training FLOPs, on its schedule; a
    # plan-known method's from its plan (train_budget), InfoBatch's from its measured run (train_measured)
    **{f"dense_at_{name}": {"recipe": "dense", "epochs": 30, "budget": name,
                            **({"lr_schedule": "linear"} if not name.endswith("_constant") else {})}
       for name in ("selective_50", "selective_25", "class_draw_50", "class_draw_25", "selective_50_every_step",
                    "selective_50_constant", "class_draw_50_constant", "infobatch_r50", "infobatch_r70",
                    "infobatch_r50_constant")},
}

DENSE_STAGE = ("baseline", "lottery", "baseline_linear", "selective_50", "selective_25", "class_draw_50",
               "class_draw_25", "infobatch_r50", "infobatch_r70", "selective_50_every_step",
               "selective_50_constant", "class_draw_50_constant", "infobatch_r50_constant")  # read nothing of sel.*
BUDGET_STAGE = ("dense_at_sel95", "dense_at_selective_50", "dense_at_selective_25", "dense_at_class_draw_50",
                "dense_at_class_draw_25", "dense_at_selective_50_every_step", "dense_at_selective_50_constant",
                "dense_at_class_draw_50_constant")  # budget: another's plan
MEASURED_STAGE = ("infobatch_r50", "infobatch_r70", "infobatch_r50_constant")  # twins at their measured FLOPs
TWIN = "dense_at_"  # the dense twin of method M is experiment dense_at_M

DEFAULT_ATTRIBUTION = {
    "sel95_vs_baseline": ("sel95", "baseline"),
    "fewer_images": ("random_subsets", "baseline"),
    "curriculum_order": ("sel95", "sel_random_order"),
    "loss_scaled_lr": ("sel95", "sel_constant_lr"),
    "gradient_mask": ("sel95", "sel_dense_grads"),
    "mask_on_baseline": ("baseline_masked", "baseline"),
    "linear_lr": ("baseline_linear", "baseline"),
    # each method against its dense twin: one pair per experiment whose budget names another
    **{f"{spec['budget']}_vs_dense_at_its_budget": (spec["budget"], name)
       for name, spec in DEFAULT_EXPERIMENTS.items() if isinstance(spec.get("budget"), str)},
}


@dataclass(frozen=True)
class TrainStagesParams:
    """Which experiments run, by the DVC stage that trains them: `train_dense` reads neither
    `sort`, `calibrate` nor `sel.*`, so SEL knobs never re-run what it trains; `train_budget`
    trains the dense runs whose budget is another experiment's plan, and depends on every
    experiment's knobs and on `sel.*`, so a change to the experiment it names re-runs it;
    `train_measured` trains the dense twin `dense_at_M` of each method M it lists at M's measured
    executed FLOPs (InfoBatch's follow its losses: no plan holds them), after M's run of that
    seed, whose summary.json it depends on."""

    # a group may be empty (DVC's matrix then has no stage)
    dense: tuple[Name, ...] = _knob(lambda: DENSE_STAGE, "experiments trained by stage train_dense",
                                    may_be_empty=True)
    sel: tuple[Name, ...] = _knob(lambda: tuple(n for n in DEFAULT_EXPERIMENTS
                                                if n not in DENSE_STAGE + BUDGET_STAGE + twins(MEASURED_STAGE)),
                                  "experiments trained by stage train_sel (they read sel.*, pools, gamma)",
                                  may_be_empty=True)
    budget: tuple[Name, ...] = _knob(lambda: BUDGET_STAGE, "experiments trained by stage train_budget (a "
                                     "budget naming another experiment)", may_be_empty=True)
    measured: tuple[Name, ...] = _knob(lambda: MEASURED_STAGE, "methods whose dense twin (experiment "
                                       "dense_at_<method>) stage train_measured trains at their measured FLOPs",
                                       may_be_empty=True)

    def trained(self, group: str) -> tuple[str, ...]:
        """The experiments stage train_<group> trains (train_measured: the listed methods' twins)."""
        return twins(self.measured) if group == "measured" else getattr(self, group)

    def names(self) -> tuple[str, ...]:
        return self.dense + self.sel + self.budget + twins(self.measured)

    def group_of(self, name: str) -> str:
        """The stage group that trains `name`."""
        return next(g for g in GROUPS if name in self.trained(g))


GROUPS = ("dense", "sel", "budget", "measured")


def twins(methods) -> tuple[str, ...]:
    return tuple(TWIN + m for m in methods)


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = _knob("sel-benchmark", "MLflow experiment that holds the runs",
                            lambda v: None if v.strip() and len(v) <= 500
                            else "must be 1 to 500 characters, not only spaces (MLflow's rule)")


@dataclass(frozen=True)
class ReportParams:
    targets: tuple[float, ...] = _knob(tuple, "validation accuracies the aggregate times each run to (time to "
                                       "accuracy at absolute targets, beside the fractions of the baseline's "
                                       "final accuracy), e.g. [0.90, 0.92, 0.93]",
                                       lambda v: None if all(0 < t <= 1 for t in v) and len(set(v)) == len(v)
                                       else "must be distinct accuracies in (0, 1]", may_be_empty=True)


@dataclass(frozen=True)
class Params:
    seeds: tuple[int, ...] = _knob(lambda: (42,), "every experiment runs once per seed (each stage seeds "
                                   "torch, numpy and random from its seed)",
                                   lambda v: None if min(v) >= 0 and max(v) < 2**32 and len(set(v)) == len(v)
                                   else "must be distinct integers from 0 to 2**32 - 1 (numpy's seeds)")
    data: DataParams = _knob(DataParams, "data source and sample sizes")
    model: ModelParams = _knob(ModelParams, "the network")
    train: TrainParams = _knob(TrainParams, "shared by every training run")
    sort: SortParams = _knob(SortParams, "difficulty sorting")
    calibrate: CalibrateParams = _knob(CalibrateParams, "gamma calibration")
    sel: SelParams = _knob(SelParams, "the SEL method")
    experiments: dict[Name, Experiment] = _knob(lambda: {n: _experiment_from(n, raw, f"experiments.{n}")
                                                         for n, raw in DEFAULT_EXPERIMENTS.items()},
                                                "experiments and controls, by name")
    train_stages: TrainStagesParams = _knob(TrainStagesParams, "which experiments run, in which stage")
    attribution: dict[Name, tuple[Name, ...]] = _knob(lambda: dict(DEFAULT_ATTRIBUTION),
                                                      "factor: [experiment with it, experiment without it]")
    mlflow: MlflowParams = _knob(MlflowParams, "run tracking")
    report: ReportParams = _knob(ReportParams, "what the aggregate reports")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", type(None): "null"}


def _fail(key, value, problem):
    raise SelError(f"params: {key} = {shorten(repr(value))}: {problem}")


def _coerce(value, tp, key, may_be_empty=False):
    """Check `value` against the annotation `tp`; return it converted (ints to floats, lists to
    tuples). A list must not be empty unless `may_be_empty` (its field's, see `_knob`)."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None) and _matches(value, option):
                return _coerce(value, option, key, may_be_empty)
        _fail(key, value, f"must be {' or '.join(_TYPE_NAMES[o] for o in options)}")
    if tp is Name:
        if not isinstance(value, str):
            _fail(key, value, "must be a string")
        return check_name(f"params: {key}", value)
    if tp == dict[Name, Experiment]:
        if not isinstance(value, dict) or not value:
            _fail(key, value, "must be a non-empty mapping of name: experiment")
        return {n: _experiment_from(n, v, f"{key}.{n}") for n, v in _keys(value, tp, key).items()}
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            _fail(key, value, "must be a mapping")
        item = typing.get_args(tp)[1]
        return {n: _coerce(v, item, f"{key}.{n}") for n, v in _keys(value, tp, key).items()}
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list) or not (value or may_be_empty):
            _fail(key, value, "must be a non-empty list")
        return tuple(_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value))
    if not _matches(value, tp):
        _fail(key, value, f"must be {_TYPE_NAMES[tp]}")
    return _finite(value, key) if tp is float else value


def _keys(mapping: dict, tp, key: str) -> dict:
    """`mapping` with its keys as strings, each checked as the annotation's key type (a Name)."""
    return {_coerce(str(n), typing.get_args(tp)[0], key): v for n, v in mapping.items()}


def _finite(value, key: str) -> float:
    """A number knob as a float. No knob means inf or nan (YAML's `.inf`, `1.0e999`), and both
    would pass a `> 0` check only to turn the loss NaN in training."""
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        _fail(key, value, "must be a finite number")
    return number


def _matches(value, tp):
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _build(cls, raw, prefix):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(prefix, raw, "must be a mapping")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key == "seed" and not prefix:
            raise SelError("params: unknown key 'seed': it is now `seeds`, a list (seeds: [42], "
                           "or -S 'seeds=[42,43,44]')")
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise SelError(f"params: unknown key {where!r} (known: {', '.join(known) or 'none'})")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            continue
        value = _coerce(raw[f.name], hints[f.name], key, f.metadata.get("may_be_empty", False))
        check = f.metadata.get("check")
        problem = check(value) if check and value is not None else None
        if problem:
            _fail(key, raw[f.name], problem)
        values[f.name] = value
    return cls(**values)


def _experiment_from(name: str, raw, key: str) -> Experiment:
    """An experiment from its params entry; the original's four names bring their own recipe
    and knobs, so that `sel95: {}` is the original's SEL-95. A key its recipe does not read is
    refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(key, raw, "must be a mapping")
    if name not in ORIGINALS and "recipe" not in raw:
        _fail(f"{key}.recipe", None, f"a new experiment names its recipe: one of {' | '.join(RECIPES)}")
    merged = {**(DEFAULT_EXPERIMENTS[name] if name in ORIGINALS else {}), **raw}
    experiment = _build(Experiment, merged, key)
    unused = sorted(set(raw) - RECIPE_KEYS[experiment.recipe] - {"recipe"})
    idle = sorted(set(raw) & set(SELECTIVE_KEYS[1:])) if experiment.selective_keep is None else []
    if idle and not unused:
        _fail(f"{key}.{idle[0]}", raw[idle[0]], "read only with selective_keep (when selective backward selects)")
    if unused:
        _fail(f"{key}.{unused[0]}", raw[unused[0]], f"not read by recipe {experiment.recipe} "
              f"(it reads {', '.join(sorted(RECIPE_KEYS[experiment.recipe]))})")
    return experiment


def _check_together(p: Params):
    """Rules that tie several keys together."""
    if p.model.pretrained and p.model.arch == "airbench":
        _fail("model.pretrained", True, "there are no ImageNet weights for model.arch = airbench; "
              "set model.pretrained=false")
    if p.model.pretrained and p.model.width != 64:
        _fail("model.pretrained", True, "ImageNet weights exist only for model.width = 64; "
              "set model.pretrained=false for other widths")
    if p.train.warmup_from and not p.train.warmup_fraction:
        _fail("train.warmup_from", p.train.warmup_from, "the start of a warm-up: set train.warmup_fraction > 0 too")
    if p.train.tta_translate and not p.train.tta:
        _fail("train.tta_translate", True, "adds shifted views to the mirror's: set train.tta=true too")
    if p.data.test_per_class is not None and p.data.held_out_per_class > p.data.test_per_class:
        _fail("data.held_out_per_class", p.data.held_out_per_class,
              f"must be <= data.test_per_class ({p.data.test_per_class})")
    names = set()
    for i, stage in enumerate(p.sel.stages):
        if stage.start >= stage.end:
            _fail(f"sel.stages.{i}", dataclasses.asdict(stage), "start must be below end")
        if stage.name in names:
            _fail(f"sel.stages.{i}.name", stage.name, "stage names must be unique")
        names.add(stage.name)
    if not p.train_stages.names():
        _fail("train_stages", dataclasses.asdict(p.train_stages), "lists no experiment")
    seen = set()
    for group in GROUPS:
        for i, name in enumerate(p.train_stages.trained(group)):
            key = f"train_stages.{group}.{i}"
            if group == "measured":
                _check_measured(p, key, p.train_stages.measured[i])
            if name not in p.experiments:
                _fail(key, name, f"no such experiment (experiments: {', '.join(p.experiments)})")
            if name in seen:
                _fail(key, name, "listed twice")
            seen.add(name)
            named = isinstance(p.experiments[name].budget, str)
            if group in ("dense", "sel") and named:
                _fail(key, name, f"its budget is experiment {p.experiments[name].budget}'s plan: list it under "
                      "train_stages.budget, whose stage depends on every experiment's knobs")
            if group == "budget" and (not named or p.experiments[name].reads_sel):
                _fail(key, name, "train_budget runs dense, unmasked runs whose budget names another "
                      "experiment: list it under train_stages.dense or train_stages.sel")
            other = p.experiments.get(p.experiments[name].budget) if group == "budget" and named else None
            if other is not None and other.infobatch_prune is not None:
                method = p.experiments[name].budget
                _fail(f"experiments.{name}.budget", method, f"{method}'s images follow its losses, so no plan holds "
                      f"them: its dense twin is experiment {TWIN}{method}, sized from its measured run (list "
                      f"{method} under train_stages.measured, not {name} under train_stages.budget)")
            if group == "dense" and plan_reads_sel(p, name):
                _fail(key, name, "it reads sel.* (curriculum, mask or loss-scaled lr): list it under "
                      "train_stages.sel, whose stage depends on them")
    for name in p.train_stages.names():
        _check_epochs(p, name)
    for name, spec in p.experiments.items():
        _check_method(name, spec)
        if isinstance(spec.budget, str):
            _check_budget(p, name, spec.budget)
    for factor, pair in p.attribution.items():
        if len(pair) != 2:
            _fail(f"attribution.{factor}", list(pair), "must be [experiment with it, experiment without it]")
        for name in pair:
            if name not in p.experiments:
                _fail(f"attribution.{factor}", list(pair), f"{name!r} is not an experiment")


def _check_epochs(p: Params, name: str):
    """A listed experiment records at least one epoch (check_plan's rule), known here before sort
    and calibrate spend their time."""
    spec = p.experiments[name]
    if spec.recipe == "curriculum":
        if not (spec.warmup_epochs or p.sel.epochs_per_stage):
            _fail("sel.epochs_per_stage", 0, f"experiment {name} (a curriculum without warm-up) would record "
                  f"no epoch: give it epochs, or experiments.{name}.warmup_epochs")
    elif not spec.epochs:
        _fail(f"experiments.{name}.epochs", 0, "it would record no epoch: must be >= 1")


def _check_method(name: str, spec: Experiment):
    """One method per experiment, and InfoBatch without what needs its images known beforehand."""
    methods = [k for k in ("selective_keep", "class_draw", "infobatch_prune", "proxy_keep")
               if getattr(spec, k) is not None]
    if len(methods) > 1:
        _fail(f"experiments.{name}.{methods[1]}", getattr(spec, methods[1]),
              f"one method per experiment: it already has {methods[0]}")
    for knob in ("class_draw", "infobatch_prune", "proxy_keep"):
        if getattr(spec, knob) is not None and spec.budget is not None:
            _fail(f"experiments.{name}.budget", spec.budget, f"a method's run takes no budget (it has {knob}): "
                  "give the budget to a dense run, naming this experiment")
    if spec.selective_start >= spec.selective_end:
        _fail(f"experiments.{name}.selective_start", spec.selective_start,
              f"must be below selective_end ({spec.selective_end})")


def _check_budget(p: Params, name: str, other: str):
    """A budget names an experiment without a budget of its own: so not itself, no chains, no cycles."""
    key = f"experiments.{name}.budget"
    if other not in p.experiments:
        _fail(key, other, f"no such experiment (experiments: {', '.join(p.experiments)})")
    if p.experiments[other].budget is not None:  # itself included
        _fail(key, other, "must name another experiment, one without a budget of its own")
    if p.experiments[other].lr_schedule != p.experiments[name].lr_schedule:
        _fail(f"experiments.{name}.lr_schedule", p.experiments[name].lr_schedule,
              f"a run whose budget is {other}'s has its schedule ({p.experiments[other].lr_schedule}): "
              "a method and its dense twin are compared on the same kind of schedule")


def _check_measured(p: Params, key: str, method: str):
    """A method listed under train_stages.measured has a run to measure (it is trained by another
    stage) and a twin dense_at_<method> whose budget names it."""
    if method not in p.train_stages.names() or method in twins(p.train_stages.measured):
        _fail(key, method, "its twin is sized from its measured run, and no stage trains it: list it under "
              "train_stages.dense or train_stages.sel")
    twin = p.experiments.get(TWIN + method)
    if twin is None or twin.recipe != "dense" or twin.budget != method:
        _fail(key, method, f"needs experiment {TWIN}{method}: {{recipe: dense, budget: {method}, epochs: ...}}")


def parse_params(raw: dict) -> Params:
    """Validated Params from the parsed params.yaml mapping; raises SelError naming the bad key."""
    params = _build(Params, _sections(raw), "")
    _check_together(params)
    return params


def _sections(raw) -> dict:
    """params.yaml's top-level mapping; an empty file is one of all defaults."""
    if raw is not None and not isinstance(raw, dict):
        kind = _TYPE_NAMES.get(type(raw), type(raw).__name__)
        raise SelError(f"params.yaml: must be a mapping of sections (seeds, data, model, ...), got {kind}")
    return raw or {}


def read_params(path: str | Path = "params.yaml") -> dict:
    """The mapping in params.yaml, unchecked (a sweep applies overrides to it first)."""
    try:
        return _sections(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as e:
        raise SelError(f"cannot read {path}: {' '.join(str(e).split())}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_params(path))


def stage_items(p: Params, stage: str) -> dict[str, list[str]]:
    """The names DVC gives the items of a foreach or matrix stage of dvc.yaml (`sort@42`,
    `train_dense@baseline-42`), each with the arguments of its script."""
    if stage in ("sort", "calibrate"):
        return {f"{stage}@{seed}": [str(seed)] for seed in p.seeds}
    group = stage.removeprefix("train_")
    return {f"{stage}@{item}-{seed}": [group, name, str(seed)]  # train_measured's items: the methods
            for item, name in zip(getattr(p.train_stages, group), p.train_stages.trained(group)) for seed in p.seeds}


def stage_keys(stage: str, experiment: str = "${item.experiment}") -> list[str]:
    """The params keys (or sections) each stage reads, as dvc.yaml lists them: a stage re-runs
    only when one of these changes. Its seed and experiment come from DVC's matrix (the
    item's name, stage_items), not from params, so adding a seed re-runs nothing that ran. train_dense reads
    nothing of `sel`: the E/C it records use `train.ec_temperature`. `experiment`: the one a
    training stage trains (default: dvc.yaml's matrix placeholder)."""
    run = ["data.held_out_per_class", "model", "train", f"experiments.{experiment}", "mlflow"]
    keys = {
        "download": ["data.source", "data.md5", "data.train_per_class", "data.test_per_class",
                     "data.val_per_class"],
        "sort": ["model", "train.device", "train.lr", "train.batch_size", "sort"],
        "calibrate": ["model", "train.device", "train.lr", "train.batch_size", "sort.scorer", "sort.scorer_epochs",
                      "calibrate"],
        "train_dense": run,
        "train_sel": run + ["sel"],
        # the budget counts a curriculum's sort and calibration passes (sort.scorer_epochs, calibrate.batch_size)
        "train_budget": ["data.held_out_per_class", "model", "train", "experiments", "sel", "sort.scorer_epochs",
                         "calibrate.batch_size", "mlflow"],
        # a method's twin: its size is the method's run (summary.json, a dependency), not its params
        "train_measured": ["data.held_out_per_class", "model", "train", f"experiments.{TWIN}{experiment}", "mlflow"],
        "aggregate": ["seeds", "data.test_per_class", "data.held_out_per_class", "train_stages",
                      "attribution", "experiments", "mlflow", "report"],
    }
    if stage not in keys:
        raise ValueError(f"unknown stage {stage!r}")
    return keys[stage]


def flatten(obj, prefix="") -> dict:
    """Params as dotted keys (`sel.stages.0.start`), as MLflow and DVC name them."""
    if dataclasses.is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    out = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
