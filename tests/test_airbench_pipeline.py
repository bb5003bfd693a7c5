"""`model.arch: airbench` through `dvc repro` on tiny data (widths 8, one epoch a run), with its
recipe, and SEL, selective backward, InfoBatch, the proxy-selected subset and a rung of the dense
ladder on it: each run finishes, records its net, and counts the passes it executed."""

import json

import numpy as np
import torch
import yaml

from conftest import mlflow_runs, run
from sel.config.params import ModelParams
from sel.experiments.plan import steps_flops
from sel.method.flops import flops_per_image
from sel.method.selective import Window, epoch_steps
from sel.train.model import build_model

WIDTHS = [8, 8, 8]
LINEAR = {"recipe": "dense", "epochs": 1, "lr_schedule": "linear"}
EXPERIMENTS = {
    "baseline": LINEAR,
    "dense_50": {**LINEAR, "epochs": 2, "budget": 0.5},
    "selective_50": {**LINEAR, "selective_keep": 0.5, "selective_start": 0.0, "selective_end": 1.0},
    "infobatch_r50": {**LINEAR, "epochs": 2, "infobatch_prune": 0.5},
    "proxy_50": {**LINEAR, "proxy_keep": 0.5, "proxy_epochs": 1},
    "sel95": {},
}


def per_image(widths) -> tuple[float, float]:
    with torch.device("meta"):
        return flops_per_image(build_model(ModelParams(arch="airbench", widths=tuple(widths), pretrained=False)))


def test_airbench_runs_every_method_through_dvc_repro(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"].update(arch="airbench", widths=WIDTHS, whiten_bias_epochs=1)
    params["train"].update(optimizer="sgd_nesterov", lr=0.05, weight_decay=5e-4, bias_lr_scale=4.0,
                           label_smoothing=0.2, augment="translate2", warmup_fraction=0.2, tta=True,
                           warmup_from=0.2, lr_end=0.07, flip="alternate", lookahead=True, tta_translate=True)
    params["experiments"] = EXPERIMENTS
    params["train_stages"] = {"dense": [n for n in EXPERIMENTS if n != "sel95"], "sel": ["sel95"],
                              "budget": [], "measured": []}
    params["attribution"] = {"sel95_vs_baseline": ["sel95", "baseline"]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], project)

    _, runs = mlflow_runs(project)
    assert set(runs) == set(EXPERIMENTS)
    summaries = {}
    for name in EXPERIMENTS:
        (r,) = runs[name]
        assert r.info.status == "FINISHED" and r.data.params["model.arch"] == "airbench"
        summaries[name] = json.loads((project / "metrics" / "runs" / name / "seed42" / "summary.json").read_text())
        assert summaries[name]["model_arch"] == "airbench" and summaries[name]["model_widths"] == WIDTHS

    n_train = 120  # 12 training images per class
    train, evaluation = per_image(WIDTHS)
    baseline = summaries["baseline"]["compute/flops_executed_T"] * 1e12
    assert np.isclose(baseline, n_train * train, rtol=1e-9)  # the net's own layers, every image once
    assert np.isclose(summaries["dense_50"]["compute/flops_executed_T"] * 1e12, baseline)  # half of 2 epochs
    # the proxy (widths 4/4/4): one epoch on every image and a scoring forward of each, counted in
    # the run's FLOPs beside its epoch on the hardest 60 images
    proxy_train, proxy_eval = per_image([4, 4, 4])
    proxy = summaries["proxy_50"]
    assert np.isclose(proxy["compute/prep_flops_executed_T"] * 1e12, n_train * (proxy_train + proxy_eval))
    assert np.isclose(proxy["compute/flops_executed_T"] * 1e12, n_train * (proxy_train + proxy_eval) + 60 * train)
    assert proxy["compute/prep_time_s"] > 0
    assert summaries["sel95"]["sparsity/sparsity"] > 0  # SEL's mask on the net's gradients
    # selective backward: every candidate forwarded, the kept half of each selecting step trained
    steps = epoch_steps(n_train, 32, 0.5, Window(0.0, 1.0, 2))
    assert np.isclose(summaries["selective_50"]["compute/flops_executed_T"] * 1e12,
                      steps_flops(steps, 32, 0.5, train, evaluation))
    assert "airbench-style net, widths 8/8/8" in (project / "metrics" / "summary.md").read_text()
