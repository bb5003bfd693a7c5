"""The proxy-selected subset: which images it keeps, the proxy's shape, its plan, its knobs."""

import copy

import numpy as np
import pytest

from sel.config.params import ModelParams, parse_params
from sel.core.errors import SelError
from sel.experiments.plan import plan
from sel.experiments.proxy_subset import hardest, kept_count_of, proxy_model_params

RAW = {"experiments": {"proxy_50": {"recipe": "dense", "epochs": 2, "lr_schedule": "linear", "proxy_keep": 0.5}},
       "train_stages": {"dense": ["proxy_50"], "sel": [], "budget": [], "measured": []}, "attribution": {}}


def test_the_hardest_share_is_kept_in_index_order():
    losses = np.array([0.1, 2.0, 0.5, 3.0, 0.2, 1.0])
    assert hardest(losses, 0.5).tolist() == [1, 3, 5]
    assert hardest(losses, 0.01).tolist() == [3]  # at least one image
    assert kept_count_of(6, 1.0) == 6


def test_the_proxy_is_the_model_with_every_width_scaled():
    airbench = proxy_model_params(ModelParams(arch="airbench", widths=(64, 128, 128), pretrained=False), 0.5)
    assert airbench.widths == (32, 64, 64) and airbench.arch == "airbench"
    resnet = proxy_model_params(ModelParams(width=16, pretrained=True), 0.01)
    assert resnet.width == 1 and not resnet.pretrained


def test_its_run_trains_every_epoch_on_the_kept_images_only():
    params = parse_params(RAW)
    spec = params.experiments["proxy_50"]
    kept = np.array([3, 7, 8, 9, 12])
    (phase,) = plan(spec, params, 10 * 2, subset=kept)
    assert phase.epochs == 2 and phase.indices.tolist() == kept.tolist()
    (sized,) = plan(spec, params, 20)  # before the proxy has run: its size alone (a twin's budget)
    assert len(sized.indices) == 10 and sized.lr_decay_steps == 2  # one step of 10 images an epoch (batch 64)


@pytest.mark.parametrize("key, value", [("proxy_keep", 0), ("proxy_keep", 1.5), ("proxy_scale", 0),
                                        ("proxy_epochs", -1)])
def test_bad_proxy_values_are_refused_in_one_line(key, value):
    raw = copy.deepcopy(RAW)
    raw["experiments"]["proxy_50"][key] = value
    with pytest.raises(SelError) as error:
        parse_params(raw)
    assert f"experiments.proxy_50.{key}" in str(error.value) and "\n" not in str(error.value)


def test_one_method_per_experiment_and_no_budget_on_it():
    for extra, key in (({"class_draw": 0.5}, "proxy_keep"), ({"budget": 0.5}, "budget")):
        raw = copy.deepcopy(RAW)
        raw["experiments"]["proxy_50"].update(extra)
        with pytest.raises(SelError, match=f"experiments.proxy_50.{key}"):
            parse_params(raw)
