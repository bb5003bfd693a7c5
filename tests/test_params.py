"""params.yaml: the defaults are the original protocol, every bad value fails with a line that
names the key, the value and what is allowed, and dvc.yaml lists what each stage reads."""

import copy

import pytest
import yaml

from conftest import ROOT
from sel.core.errors import SelError
from sel.config.params import Params, flatten, load_params, parse_params

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(key: str, value):
    raw = copy.deepcopy(RAW)
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return raw


def test_params_yaml_holds_the_original_protocol():
    params = load_params(ROOT / "params.yaml")
    assert params == Params()  # the file and the dataclass defaults agree
    assert params.seeds == (42,) and params.train.batch_size == 64 and params.train.lr == 1e-3
    assert params.experiments["lottery"].prune_fraction == 0.8 and params.calibrate.percentile == 40
    assert params.experiments["baseline"].epochs == 30 and params.experiments["warmup_sel"].warmup_epochs == 5
    assert params.sel.gamma_mode == "calibrated"  # the original's gamma, by default
    assert [(s.name, s.start, s.end) for s in params.sel.stages] == [
        ("easy", 0.0, 0.25), ("medium", 0.2, 0.5), ("hard", 0.4, 0.65), ("harder", 0.6, 0.82),
        ("hardest", 0.78, 1.0)]
    assert flatten(params)["sel.stages.4.start"] == 0.78


def test_a_stage_group_may_be_empty():
    """DVC's matrix then has no stage of that group."""
    assert parse_params(with_value("train_stages.measured", [])).train_stages.measured == ()


@pytest.mark.parametrize("key, value, named, allowed", [
    ("calibrate.percentile", 140, "calibrate.percentile", "below 100"),
    ("calibrate.percentile", 100, "calibrate.percentile", "would zero every gradient"),
    ("calibrate.percentile", -1, "calibrate.percentile", "at least 0"),
    ("calibrate.mode", "both", "calibrate.mode", "eval | train"),
    ("calibrate.batch_size", 0, "calibrate.batch_size", ">= 1"),
    ("train.batch_size", 0, "train.batch_size", ">= 1"),
    ("train.device", "tpu", "train.device", "auto, cpu, cuda or cuda:N"),
    ("train.precision", "fp16", "train.precision", "auto | fp32 | bf16"),
    ("train.compile", "yes", "train.compile", "auto | true | false"),
    ("train.lr", -0.1, "train.lr", "> 0"),
    ("experiments.baseline.epochs", -1, "experiments.baseline.epochs", ">= 0"),
    ("experiments.lottery.prune_fraction", 1.0, "experiments.lottery.prune_fraction", "[0, 1)"),
    ("sel.stages.0.start", -0.1, "sel.stages.0.start", "between 0 and 1"),
    ("sel.stages.1.end", 1.5, "sel.stages.1.end", "between 0 and 1"),
    ("sel.stages.2", {"name": "hard", "start": 0.6, "end": 0.4}, "sel.stages.2", "start must be below end"),
    ("sel.epochs_per_stage", "ten", "sel.epochs_per_stage", "an integer"),
    ("data.train_per_class", 0, "data.train_per_class", ">= 1, or null"),
    ("data.md5", "abc", "data.md5", "auto, null or 32 hex digits"),
    ("data.source", " ", "data.source", "must name a URL, an archive or a folder"),
    ("data.held_out_per_class", 0, "data.held_out_per_class", ">= 1"),
    ("model.width", 16, "model.pretrained", "ImageNet weights exist only for model.width = 64"),
    ("model.arch", "resnet50", "model.arch", "resnet18 | airbench"),
    ("model.arch", "airbench", "model.pretrained", "no ImageNet weights for model.arch = airbench"),
    ("model.widths", [64, 0, 128], "model.widths", "3 integers >= 1"),
    ("model.widths", [64, 128, -1], "model.widths", "3 integers >= 1"),
    ("model.widths", [64, 128], "model.widths", "3 integers >= 1"),
    ("model.widths", [64, 128, 128, 128], "model.widths", "3 integers >= 1"),
    ("model.widths", 64, "model.widths", "non-empty list"),
    ("seeds", [], "seeds", "non-empty list"),  # only a stage group may be empty
    ("sel.stages", [], "sel.stages", "non-empty list"),
    ("seeds", [42, 1.5], "seeds.1", "an integer"),
    ("seeds", [-1], "seeds", "integers from 0 to 2**32 - 1"),
    ("mlflow.experiment", " ", "mlflow.experiment", "must be 1 to 500 characters"),
    ("experiments.baseline.selective_keep", 0, "experiments.baseline.selective_keep", "(0, 1]"),
    ("experiments.sel95.selective_keep", 1.5, "experiments.sel95.selective_keep", "(0, 1]"),
    ("experiments.lottery.selective_keep", 0.5, "experiments.lottery.selective_keep",
     "not read by recipe lottery"),
])
def test_bad_value_names_key_value_and_what_is_allowed(key, value, named, allowed):
    with pytest.raises(SelError) as e:
        parse_params(with_value(key, value))
    message = str(e.value)
    assert named in message and allowed in message, message
    assert "\n" not in message


@pytest.mark.parametrize("raw_change, named", [
    (lambda r: r["experiments"]["baseline"].update(epoch=3), "experiments.baseline.epoch"),
    (lambda r: r.update(sede=43), "sede"),
    (lambda r: r["sel"].update(gama_decay=0.3), "sel.gama_decay"),
    (lambda r: r.update(trian={}), "trian"),
])
def test_unknown_key_is_refused(raw_change, named):
    raw = copy.deepcopy(RAW)
    raw_change(raw)
    with pytest.raises(SelError, match=f"unknown key '{named}'"):
        parse_params(raw)


def test_the_old_seed_key_points_to_seeds():
    raw = copy.deepcopy(RAW)
    raw["seed"] = 43
    with pytest.raises(SelError, match="unknown key 'seed': it is now `seeds`, a list"):
        parse_params(raw)


@pytest.mark.parametrize("raw_change, named", [
    (lambda r: r["experiments"].update({"x$(touch PWNED)": {"recipe": "dense"}}), "params: experiments: "),
    (lambda r: r["train_stages"]["dense"].append("it's"), "params: train_stages.dense.13: "),
    (lambda r: r["attribution"].update({"a b": ["sel95", "baseline"]}), "params: attribution: "),
    (lambda r: r["attribution"].update(f=["sel95", "../../tmp/evil"]), "params: attribution.f.1: "),
    (lambda r: r["sel"]["stages"][0].update(name="<!--<script"), "params: sel.stages.0.name: "),
])
def test_a_name_that_could_reach_a_shell_a_path_or_a_page_is_refused_where_it_enters(raw_change, named):
    """Experiment, factor and stage names go into dvc.yaml's commands, paths, MLflow keys and
    the results page; one a shared params.yaml sets must not run a command there."""
    raw = copy.deepcopy(RAW)
    raw_change(raw)
    with pytest.raises(SelError) as e:
        parse_params(raw)
    message = str(e.value)
    assert message.startswith(named) and "is not a valid name: use 1-64 letters" in message, message
    assert "\n" not in message


def test_names_as_cifar_spells_them_pass():
    raw = copy.deepcopy(RAW)
    raw["experiments"].update({"sel95.v2": {"recipe": "curriculum"}, "Lr-1e-3_x": {"recipe": "dense"}})
    assert {"sel95.v2", "Lr-1e-3_x"} <= set(parse_params(raw).experiments)


@pytest.mark.parametrize("key, value", [("train.lr", float("inf")), ("train.lr", float("nan")),
                                        ("train.lr", 10 ** 400), ("sel.temperature", float("inf")),
                                        ("train.ec_temperature", float("inf")),
                                        ("sel.lr_loss_scale", float("inf"))],
                         ids=["lr-inf", "lr-nan", "lr-huge-int", "temperature", "ec_temperature", "lr_loss_scale"])
def test_a_number_knob_is_finite(key, value):
    """`train.lr: 1.0e999` is inf: it passed `> 0` and turned the loss NaN in training."""
    with pytest.raises(SelError, match=f"params: {key} = .*: must be a finite number"):
        parse_params(with_value(key, value))


def test_a_params_file_that_is_not_a_mapping_says_so(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- seeds: [42]\n")
    with pytest.raises(SelError) as e:
        load_params(path)
    assert str(e.value) == "params.yaml: must be a mapping of sections (seeds, data, model, ...), got a list"
