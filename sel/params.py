"""Typed parameters: params.yaml is read once and every key checked before any work starts.

Each field carries its help text and its check, so a bad value fails with one line that names
the key, the value and what is allowed. Names and defaults follow the original protocol.
"""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import SelError

EXPERIMENTS = ("baseline", "lottery", "sel95", "warmup_sel")
SEL_EXPERIMENTS = ("sel95", "warmup_sel")


def _knob(default, help, check=None):
    """A field with its help text and an optional check returning what is allowed, or None."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, "check": check})


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


@dataclass(frozen=True)
class ModelParams:
    arch: str = _knob("resnet18", "architecture", _one_of("resnet18"))
    width: int = _knob(64, "channels of the first stage (64 = ResNet-18)", _at_least(1))
    pretrained: bool = _knob(True, "load ImageNet weights through torchvision (width 64 only)")


@dataclass(frozen=True)
class TrainParams:
    device: str = _knob("auto", "auto | cpu | cuda | cuda:N", _device)
    batch_size: int = _knob(64, "training batch size", _at_least(1))
    lr: float = _knob(1e-3, "Adam learning rate", lambda v: None if v > 0 else "must be > 0")
    precision: str = _knob("auto", "auto | fp32 | bf16 (autocast)", _one_of("auto", "fp32", "bf16"))
    compile: str | bool = _knob("auto", "torch.compile: auto | true | false",
                                _one_of("auto", True, False))
    eval_batch_size: int = _knob(1000, "evaluation batch size", _at_least(1))
    ec_temperature: float = _knob(1.5, "T of the E/C the dense runs (baseline, lottery) record; "
                                  "the SEL runs record theirs at sel.temperature",
                                  lambda v: None if v > 0 else "must be > 0")


@dataclass(frozen=True)
class SortParams:
    scorer_epochs: int = _knob(0, "dense epochs for the scorer before scoring (0 = fresh model)",
                               _at_least(0))


@dataclass(frozen=True)
class CalibrateParams:
    percentile: float = _knob(40.0, "percentile of |grad| that becomes gamma", _between(0, 100))
    batch_size: int = _knob(128, "images in the calibration batch", _at_least(1))
    mode: str = _knob("eval", "eval (the original: BatchNorm running stats) | train",
                      _one_of("eval", "train"))


@dataclass(frozen=True)
class Stage:
    name: str = _knob("stage", "stage name")
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


@dataclass(frozen=True)
class BaselineParams:
    epochs: int = _knob(30, "dense epochs on all training images", _at_least(0))


@dataclass(frozen=True)
class LotteryParams:
    pretrain_epochs: int = _knob(15, "dense epochs before the prune", _at_least(0))
    prune_fraction: float = _knob(0.8, "fraction of all parameters pruned by magnitude",
                                  lambda v: None if 0 <= v < 1 else "must be in [0, 1)")
    epochs: int = _knob(30, "masked epochs after the rewind", _at_least(0))


@dataclass(frozen=True)
class Sel95Params:
    """No knobs of its own: the stages come from `sel`."""


@dataclass(frozen=True)
class WarmupSelParams:
    warmup_epochs: int = _knob(5, "dense epochs on the easiest images first", _at_least(0))
    warmup_per_class: int = _knob(1000, "easiest images per class in the warm-up", _at_least(1))


@dataclass(frozen=True)
class ExperimentsParams:
    baseline: BaselineParams = _knob(BaselineParams, "dense baseline")
    lottery: LotteryParams = _knob(LotteryParams, "lottery ticket: prune, rewind, retrain")
    sel95: Sel95Params = _knob(Sel95Params, "the SEL curriculum from the fresh model")
    warmup_sel: WarmupSelParams = _knob(WarmupSelParams, "dense warm-up, then the SEL curriculum")


@dataclass(frozen=True)
class MlflowParams:
    experiment: str = _knob("sel-benchmark", "MLflow experiment that holds the runs",
                            lambda v: None if v.strip() else "must not be empty")


@dataclass(frozen=True)
class Params:
    seed: int = _knob(42, "seeds torch, numpy and random at the start of every stage", _at_least(0))
    data: DataParams = _knob(DataParams, "data source and sample sizes")
    model: ModelParams = _knob(ModelParams, "the network")
    train: TrainParams = _knob(TrainParams, "shared by every training run")
    sort: SortParams = _knob(SortParams, "difficulty sorting")
    calibrate: CalibrateParams = _knob(CalibrateParams, "gamma calibration")
    sel: SelParams = _knob(SelParams, "the SEL method")
    experiments: ExperimentsParams = _knob(ExperimentsParams, "the four experiments")
    mlflow: MlflowParams = _knob(MlflowParams, "run tracking")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               type(None): "null"}


def _fail(key, value, problem):
    raise SelError(f"params: {key} = {value!r}: {problem}")


def _coerce(value, tp, key):
    """Check `value` against the annotation `tp`; return it converted (ints to floats, lists to tuples)."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None) and _matches(value, option):
                return _coerce(value, option, key)
        _fail(key, value, f"must be {' or '.join(_TYPE_NAMES[o] for o in options)}")
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list) or not value:
            _fail(key, value, "must be a non-empty list")
        return tuple(_coerce(v, item, f"{key}.{i}") for i, v in enumerate(value))
    if not _matches(value, tp):
        _fail(key, value, f"must be {_TYPE_NAMES[tp]}")
    return float(value) if tp is float else value


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
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise SelError(f"params: unknown key {where!r} (known: {', '.join(known) or 'none'})")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            continue
        value = _coerce(raw[f.name], hints[f.name], key)
        check = f.metadata.get("check")
        problem = check(value) if check and value is not None else None
        if problem:
            _fail(key, raw[f.name], problem)
        values[f.name] = value
    return cls(**values)


def _check_together(p: Params):
    """Rules that tie several keys together."""
    if p.model.pretrained and p.model.width != 64:
        _fail("model.pretrained", True, "ImageNet weights exist only for model.width = 64; "
              "set model.pretrained=false for other widths")
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


def parse_params(raw: dict) -> Params:
    """Validated Params from the parsed params.yaml mapping; raises SelError naming the bad key."""
    params = _build(Params, raw, "")
    _check_together(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SelError(f"cannot read {path}: {e}") from None
    return parse_params(raw)


def stage_keys(stage: str) -> list[str]:
    """The params keys (or sections) each stage reads, as dvc.yaml lists them: a stage re-runs
    only when one of these changes. The dense runs read nothing of `sel`: the temperature of
    the E/C they record is `train.ec_temperature`."""
    if stage == "download":
        return ["data.source", "data.md5", "data.train_per_class", "data.test_per_class"]
    if stage == "sort":
        return ["seed", "model", "train.device", "train.lr", "train.batch_size", "sort"]
    if stage == "calibrate":
        return ["seed", "model", "train.device", "calibrate"]
    if stage in EXPERIMENTS:
        sel = ["sel"] if stage in SEL_EXPERIMENTS else []
        return ["seed", "data.held_out_per_class", "model", "train", *sel, f"experiments.{stage}", "mlflow"]
    if stage == "aggregate":
        return ["mlflow"]
    raise ValueError(f"unknown stage {stage!r}")


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
