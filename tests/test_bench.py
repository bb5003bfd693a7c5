"""The speed rules that are properties, not timings: our loop never reads a value back to the
host inside a training epoch, and `python -m sel.speed.bench` measures both loops and reports them,
and the methods on the airbench net at its recipe.
(Evaluation runs under inference_mode, where dispatch modes see nothing, so it is not counted.)"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from builders import make_arrays
from sel.speed.bench import (SyncCounter, airbench, kept_share, our_trainer, protocol_work, resnet, synthetic,
                             time_airbench, time_methods, time_original, time_ours)
from sel.data.dataset import Cifar
from sel.train.device import PYTORCH_DEFAULT_MATH, default_math, exact_fp32, math_settings
from sel.train.airbench import Airbench
from sel.train.model import fresh_model
from sel.config.params import ModelParams, Params
from sel.config.protocols import CPU_SMALL, with_overrides
from sel.train.training import Trainer


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_epoch_never_syncs_with_the_host(precision):
    data = Cifar(*make_arrays(10, 4))
    trainer = Trainer(fresh_model(0, ModelParams(width=4, pretrained=False), 10), data, np.arange(20), device=torch.device("cpu"),
                      precision=precision, lr=1e-3, batch_size=16, eval_batch_size=16, seed=0)
    everything = torch.arange(len(data.y_train))
    for update in ("dense", "sel", "masked"):
        if update == "masked":
            trainer.prune_and_rewind(0.8)
        with SyncCounter() as counter:
            trainer.train_epoch(everything, update, gamma=1e-4)
        assert counter.count == 0, update
    with SyncCounter() as counter:  # the counter does see a read
        trainer.grads.flat.sum().item()
    assert counter.count == 1


def test_cpu_small_work_is_as_the_issue_counts_it():
    work = protocol_work(with_overrides({}, CPU_SMALL), 1000, 300)
    assert work["dense"] + work["sel"] == 1_008_000  # ~1.0M training images
    original_evals = work["eval_epochs"] * (work["test_images"] + work["held_out_images"])
    assert original_evals == 660_000  # ~0.66M evaluation forwards in the original
    assert with_overrides({}, CPU_SMALL).model.width == 16 and Params().model.width == 64


@pytest.mark.slow  # the bench end to end, both loops, in a process of its own
def test_bench_reports_both_loops():
    out = subprocess.run([sys.executable, "-m", "sel.speed.bench", "--full", "--widths", "4", "--steps", "3",
                          "--warmup", "1", "--repeats", "1", "--infobatch-kept", "0.71", "0.6",
                          "--airbench-widths", "8", "8", "8", "--airbench-batch", "64", "--airbench-steps", "2"],
                         capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout)
    # the expected duration first, then a line per case (2), per method (8) and per airbench
    # case (SEL and the 8 methods) as it goes
    lines = out.stderr.splitlines()
    assert "expected about" in lines[0] and sum(line.startswith("[bench ") for line in lines) == 19, out.stderr
    assert {c["step"] for c in report["cases"]} == {"dense", "sel"}
    for case in report["cases"]:
        assert case["ours_syncs_per_step"] == 0
        assert case["original_syncs_per_step"] >= 2  # loss.item() and the accuracy, at least
        assert case["ours_img_s"] > 0 and case["original_img_s"] > 0
        assert case["speedup"] == pytest.approx(case["ours_img_s"] / case["original_img_s"], rel=0.05, abs=0.01)
        assert case["original_math"] == PYTORCH_DEFAULT_MATH  # on a CPU ours runs under them too
        assert case["ours_math"] == PYTORCH_DEFAULT_MATH
    assert report["matmul_peak_gflops"]["fp32"] > 0 and report["eval"][0]["ours_img_s"] > 0
    # each method at the default keeps and ratios, against the dense step timed beside it;
    # InfoBatch at its promise and at the share its runs kept
    assert [(m["method"], m.get("keep", m.get("ratio")), m.get("kept")) for m in report["methods"]] == [
        ("selective", 0.5, None), ("selective", 0.25, None), ("class_draw", 0.5, None), ("class_draw", 0.25, None),
        ("infobatch", 0.5, 0.75), ("infobatch", 0.5, 0.71), ("infobatch", 0.7, 0.65), ("infobatch", 0.7, 0.6)]
    for method in report["methods"]:
        assert method["ours_syncs_per_step"] == 0 and method["ours_dense_img_s"] > 0
        assert method["ours_speedup"] == pytest.approx(method["ours_img_s"] / method["ours_dense_img_s"], rel=0.05,
                                                       abs=0.01)
    ratios = [m["flops_ratio"] for m in report["methods"]]
    assert 1 < ratios[0] < ratios[1] and ratios[2:4] == [2.0, 4.0]  # the draw trains a half, a quarter
    assert ratios[4] == pytest.approx(1 / (1 - 0.25), abs=0.01) and ratios[6] == pytest.approx(1 / (1 - 0.35), abs=0.01)
    assert ratios[5] == pytest.approx(1 / 0.71, abs=0.01) and ratios[7] == pytest.approx(1 / 0.6, abs=0.01)
    on_airbench = report["airbench"]
    assert on_airbench["batch"] == 64 and on_airbench["steps"] == 2
    assert [(m["widths"], m["method"]) for m in on_airbench["methods"]] == [
        ([8, 8, 8], kind) for kind in ["sel"] + [m["method"] for m in report["methods"]]]
    assert all(m["ours_img_s"] > 0 and m["ours_dense_img_s"] > 0 for m in on_airbench["methods"])
    assert [m["flops_ratio"] for m in on_airbench["methods"]][3:5] == [2.0, 4.0]


def test_infobatch_is_timed_at_its_promise_and_at_the_share_its_runs_kept(tmp_path):
    # a run's images per epoch are its executed FLOPs per epoch over its FLOPs per image: the
    # pruned epochs' shares of the full ones (the first and the anneal's), over its seeds
    for seed, pruned in ((42, [0.70, 0.72]), (43, [0.74])):
        epochs = [1.0, *pruned, 1.0]
        (tmp_path / "runs" / f"seed{seed}").mkdir(parents=True)
        pd.DataFrame({"compute/flops_executed_T": np.cumsum(epochs) * 3.0}).to_csv(
            tmp_path / "runs" / f"seed{seed}" / "history.csv", index=False)
    assert kept_share(tmp_path / "runs") == pytest.approx(0.72)
    assert kept_share(tmp_path / "no_such_experiment") is None
    rows = time_methods(resnet(4), [("infobatch", 0.5), ("infobatch", 0.5, 0.71)], 2, 1, torch.device("cpu"), "fp32",
                        synthetic(91 * 6, 100), repeats=1)
    assert [(r["ratio"], r["kept"], r["kept_from"]) for r in rows] == [(0.5, 0.75, "promise"), (0.5, 0.71, "measured")]
    assert [r["flops_ratio"] for r in rows] == [pytest.approx(1 / 0.75, abs=0.01), pytest.approx(1 / 0.71, abs=0.01)]
    assert all(r["ours_syncs_per_step"] == 0 and r["ours_img_s"] > 0 for r in rows)


def test_the_methods_are_timed_on_the_airbench_net_at_its_recipe():
    # our step on the airbench net as the pipeline builds it: airbench's recipe, SGD with
    # Nesterov momentum, label smoothing, at the batch asked for
    data, cpu = synthetic(128 * 6, 100), torch.device("cpu")
    trainer = our_trainer(airbench((8, 8, 8), 64), cpu, "fp32", data)
    assert isinstance(trainer.model, Airbench) and trainer.batch_size == 64
    assert trainer.recipe["optimizer"] == "sgd_nesterov" and trainer.label_smoothing == 0.2
    section = time_airbench([(8, 8, 8)], 64, [("selective", 0.5), ("class_draw", 0.5)], 2, cpu, "fp32", data,
                            repeats=1)
    assert section["batch"] == 64 and section["steps"] == 2
    rows = section["methods"]
    assert [(r["widths"], r["method"]) for r in rows] == [([8, 8, 8], "sel"), ([8, 8, 8], "selective"),
                                                          ([8, 8, 8], "class_draw")]
    assert rows[0]["gamma"] > 0  # SEL's masked step, at a gamma calibrated on this net
    # masking saves no executed FLOPs; selective backward forwards every candidate; the draw trains half
    assert rows[0]["flops_ratio"] == 1.0 and 1 < rows[1]["flops_ratio"] < 2 and rows[2]["flops_ratio"] == 2.0
    for r in rows:
        assert r["ours_img_s"] > 0 and r["ours_dense_img_s"] > 0 and r["ours_syncs_per_step"] == 0
        assert r["ours_speedup"] == pytest.approx(r["ours_img_s"] / r["ours_dense_img_s"], rel=0.05, abs=0.01)


def test_the_default_math_is_a_fresh_processes():
    code = "import json; from sel.train.device import math_settings; print(json.dumps(math_settings()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == PYTORCH_DEFAULT_MATH


def test_each_loop_is_timed_under_its_own_math():
    """An fp32 Trainer on CUDA turns TF32 off for the whole process; timed after one, the
    original's loop still runs under PyTorch's defaults, and what each timing set stays in it."""
    data = synthetic(64 * 6, 100)
    cpu = torch.device("cpu")
    with default_math():  # what this test sets stays in it
        exact_fp32(torch.device("cuda"))  # it only sets the process-wide switches: no GPU needed
        exact = math_settings()
        assert exact["cudnn_allow_tf32"] is False
        *_, original_math = time_original(4, "sel", 1, 1, cpu, data, 1e-4)
        assert original_math == PYTORCH_DEFAULT_MATH
        assert math_settings() == exact  # left as it found them
        *_, ours_math = time_ours(resnet(4), "sel", 1, 1, cpu, "fp32", data, 1e-4)
        assert ours_math == PYTORCH_DEFAULT_MATH  # a CPU Trainer sets nothing
        assert math_settings() == exact


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_ours_runs_exact_fp32_and_the_original_tf32_convolutions():
    data, cuda = synthetic(64 * 6, 100), torch.device("cuda")
    *_, ours_math = time_ours(resnet(4), "sel", 1, 1, cuda, "fp32", data, 1e-4)
    *_, original_math = time_original(4, "sel", 1, 1, cuda, data, 1e-4)
    assert ours_math["cudnn_allow_tf32"] is False and ours_math["matmul_allow_tf32"] is False
    assert original_math == PYTORCH_DEFAULT_MATH and original_math["cudnn_allow_tf32"] is True
    assert math_settings() == PYTORCH_DEFAULT_MATH
