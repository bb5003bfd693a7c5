"""Time-to-accuracy (issues 22, 27): each run's history holds its training seconds with evaluation
apart, its validation curve (validation.csv) the accuracy on the validation split from step 0, and
the aggregate reports, per experiment, what the runs spent to first reach fractions of the
baseline's final mean validation accuracy, interpolated between evaluations, "not reached" included."""

import time

import numpy as np
import pandas as pd
import pytest
import torch

from builders import CLASSES, make_arrays
from sel.data.dataset import Cifar, held_out_indices, subsample
from sel.experiments.plan import ExperimentRun, Phase
from sel.report.summary import NO_VALIDATION, headline, markdown, mlflow_metrics, spent_to_reach, summarise
from sel.config.params import ModelParams
from sel.train.model import fresh_model
from sel.train.training import Trainer


def curve(accuracy, flops, seconds) -> pd.DataFrame:
    """A validation curve as validation.csv holds it: an evaluation per row from step 0."""
    return pd.DataFrame({"step": range(len(accuracy)), "epoch": np.arange(len(accuracy)) / 2,
                         "compute/flops_executed_T": flops, "compute/train_time_s": seconds, "acc/val": accuracy})


def test_the_crossing_is_interpolated_between_the_evaluations_around_it():
    """Between the last evaluation below the target and the first at or above it, not at the
    later one; at step 0 if the initial model is already there."""
    c = curve([0.1, 0.5, 0.9, 0.85], [0.0, 1.0, 2.0, 3.0], [0.0, 10.0, 20.0, 30.0])
    assert spent_to_reach(c, 0.7) == pytest.approx({"compute/flops_executed_T": 1.5, "compute/train_time_s": 15.0})
    assert spent_to_reach(c, 0.6) == pytest.approx({"compute/flops_executed_T": 1.25, "compute/train_time_s": 12.5})
    assert spent_to_reach(c, 0.9) == {"compute/flops_executed_T": 2.0, "compute/train_time_s": 20.0}
    assert spent_to_reach(c, 0.05) == {"compute/flops_executed_T": 0.0, "compute/train_time_s": 0.0}
    assert spent_to_reach(c, 0.95) is None


def hand_made():
    """The baseline's validation accuracy ends at 0.8 and 1.0 (mean 0.9: targets 0.81, 0.855,
    0.9), its test accuracy elsewhere; `method` reaches 90% in both seeds (seed 1 at an
    evaluation, seed 2 halfway between two), 95% and 100% in seed 1 only."""
    curves = {"baseline": {1: curve([0.0, 0.5, 0.8], [0, 5, 10], [0, 50, 100]),
                           2: curve([0.0, 0.6, 1.0], [0, 5, 10], [0, 50, 100])},
              "method": {1: curve([0.0, 0.81, 0.95], [0, 1, 2], [0, 5, 10]),
                         2: curve([0.0, 0.61, 0.77, 0.85], [0, 1, 1.5, 2.5], [0, 6, 9, 15])}}
    summaries = {name: {seed: {"acc/test_full": 0.3} for seed in by_seed} for name, by_seed in curves.items()}
    return summarise(summaries, {}, curves)


def test_time_to_accuracy_over_seeds_with_not_reached():
    rows = {(r["experiment"], r["target"]): r for r in hand_made()["time_to_accuracy"]}
    r90, r95, r100 = (rows["method", t] for t in (0.9, 0.95, 1.0))
    assert r90["accuracy"] == pytest.approx(0.81) and r90["reached"] == [1, 2]  # the validation mean's 90%
    assert r90["compute/flops_executed_T"]["mean"] == pytest.approx(1.5)
    assert r90["compute/train_time_s"]["mean"] == pytest.approx(8.5)
    assert r90["compute/train_time_s"]["ci_low"] < 8.5 < r90["compute/train_time_s"]["ci_high"]
    assert r95["reached"] == r100["reached"] == [1] and r100["compute/flops_executed_T"] is None  # no mean
    assert rows["baseline", 0.9]["reached"] == [2]  # seed 1 ends at 0.8, below 0.81


def test_time_to_accuracy_reaches_summary_md_and_mlflow():
    summary = hand_made()
    text = markdown(summary, "note")
    assert "## Time to accuracy" in text
    assert "| method | 100% of baseline (90.0%) | not reached (1/2 seeds) | not reached (1/2 seeds) |" in text
    metrics = mlflow_metrics(summary)
    assert metrics["to_acc90/method.flops_executed_T.mean"] == pytest.approx(1.5)
    assert metrics["to_acc100/method.reached"] == 1 and "to_acc100/method.train_time_s.mean" not in metrics


def test_an_absolute_target_is_timed_beside_the_fractions_and_labelled_apart():
    """report.targets: accuracies of their own, not of the baseline's. 0.9 absolute is crossed by
    `method` between two evaluations in seed 1 (0.81 -> 0.95 at FLOPs 1 -> 2: 1 + 0.09 / 0.14)
    and in neither by seed 2, so it is not reached there; the fraction 0.9 (0.81) is."""
    curves = {"baseline": {1: curve([0.0, 0.5, 0.8], [0, 5, 10], [0, 50, 100]),
                           2: curve([0.0, 0.6, 1.0], [0, 5, 10], [0, 50, 100])},
              "method": {1: curve([0.0, 0.81, 0.95], [0, 1, 2], [0, 5, 10])}}
    summaries = {name: {seed: {"acc/test_full": 0.3} for seed in by_seed} for name, by_seed in curves.items()}
    summary = summarise(summaries, {}, curves, targets=(0.9, 0.925))
    rows = {(r["experiment"], r["target"], r["absolute"]): r for r in summary["time_to_accuracy"]}
    crossed = rows["method", 0.9, True]
    assert crossed["accuracy"] == 0.9 and crossed["compute/flops_executed_T"]["mean"] == pytest.approx(1 + 0.09 / 0.14)
    assert rows["method", 0.9, False]["accuracy"] == pytest.approx(0.81)  # the fraction's row stays
    assert rows["baseline", 0.9, True]["reached"] == [2] and rows["baseline", 0.9, True]["compute/train_time_s"] is None
    text = markdown(summary, "note")
    assert "| method | 90% val | 1.643 |" in text and "| method | 92.5% val |" in text
    assert "| method | 90% of baseline (81.0%) | 1 |" in text
    metrics, head = mlflow_metrics(summary), headline(summary)
    assert metrics["to_val90/method.flops_executed_T.mean"] == pytest.approx(1.643, abs=1e-3)
    assert metrics["to_acc90/method.flops_executed_T.mean"] == 1.0 and metrics["to_val90/baseline.reached"] == 1
    assert head["method"]["to_val90_flops_executed_T"] == pytest.approx(1.643, abs=1e-3)
    assert head["method"]["to90_flops_executed_T"] == 1.0 and "to_val90_train_time_s" not in head["baseline"]


def test_headline_holds_what_reaching_90_percent_cost_where_every_seed_did():
    """`dvc exp show` columns: a mean only where every seed got there (the baseline's seed 1
    did not), so a run that mostly fails is not shown as cheap."""
    head = headline(hand_made())
    assert head["method"]["to90_flops_executed_T"] == pytest.approx(1.5)
    assert head["method"]["to90_train_time_s"] == pytest.approx(8.5)
    assert not {k for k in head["baseline"] if k.startswith("to90")}


def test_training_time_leaves_evaluation_out():
    data = Cifar(*make_arrays(4, 2))
    trainer = Trainer(fresh_model(0, ModelParams(width=4, pretrained=False), 10), data, held_out_indices(data.y_test, 1, 10),
                      device=torch.device("cpu"), precision="fp32", lr=1e-3, batch_size=16,
                      eval_batch_size=64, seed=0)
    evaluate = trainer.evaluate

    def slow_evaluation():
        time.sleep(0.5)
        return evaluate()

    trainer.evaluate = slow_evaluation
    run = ExperimentRun("x", trainer, [Phase("dense", 2, np.arange(40), 0)], data.classes, out=None)
    run.run()
    train, total = ([row[c] for row in run.rows] for c in ("compute/train_time_s", "compute/time_s"))
    assert 0 < train[0] < train[1]  # cumulative
    assert train[1] < total[1] - 2 * 0.5
    assert run.summary()["compute/train_time_s"] == train[1]


def test_without_a_validation_split_time_to_accuracy_is_not_computed():
    """Targets are never read on the test set: runs without validation.csv rows get one line."""
    empty = {"baseline": {1: pd.DataFrame()}, "method": {1: pd.DataFrame()}}
    summary = summarise({name: {1: {"acc/test_full": 0.5}} for name in empty}, {}, empty)
    assert summary["time_to_accuracy"] == []
    text = markdown(summary, "note")
    assert f"## Time to accuracy\n\n{NO_VALIDATION}\n" in text and "| method | 90%" not in text


def trainer(data: Cifar) -> Trainer:
    return Trainer(fresh_model(0, ModelParams(width=4, pretrained=False), 10), data, held_out_indices(data.y_test, 1, 10),
                   device=torch.device("cpu"), precision="fp32", lr=1e-3, batch_size=16, eval_batch_size=8, seed=0)


def validated_run(val_every, pause: float = 0.0) -> ExperimentRun:
    """Two epochs of 40 images (3 steps each: 16, 16, 8) with a validation split of 20; each
    validation takes `pause` seconds more."""
    data = subsample(Cifar(*make_arrays(6, 2)), None, None, 2)
    t = trainer(data)
    validate = t.validation_accuracy

    def slow_validation():
        time.sleep(pause)
        return validate()

    t.validation_accuracy = slow_validation
    run = ExperimentRun("x", t, [Phase("dense", 2, np.arange(40), 0)], data.classes, out=None, val_every=val_every)
    run.run()
    return run


def test_val_every_evaluates_every_k_steps_of_the_run_and_at_epoch_ends_from_step_0():
    run = validated_run(2)
    rows = run.validation.rows
    # step 0; step 2 (32 of the epoch's 40 images); the epoch end (3); step 4 (16 of 40); the end (6)
    assert [r["step"] for r in rows] == [0, 2, 3, 4, 6]
    assert [r["epoch"] for r in rows] == pytest.approx([0, 0.8, 1, 1.4, 2])
    ends = [r for r in rows if r["epoch"] in (1, 2)]
    for row, end in zip(run.rows, ends):
        assert row["acc/val"] == end["acc/val"]
        assert row["compute/train_time_s"] == end["compute/train_time_s"]  # exact at epoch ends
        assert row["compute/flops_executed_T"] == pytest.approx(end["compute/flops_executed_T"])
    first, mid = run.rows[0], rows[1]
    assert mid["compute/flops_executed_T"] == pytest.approx(0.8 * first["compute/flops_executed_T"])
    assert 0 < mid["compute/train_time_s"] < first["compute/train_time_s"]
    assert rows[0]["compute/flops_executed_T"] == rows[0]["compute/train_time_s"] == 0
    # five evaluations of 20 images beside the two of the test set's 20
    assert run.totals["flops_eval"] == pytest.approx(run.eval_flops * (2 * 20 + 5 * 20))
    assert [r["step"] for r in validated_run(None).validation.rows] == [0, 3, 6]


def test_evaluating_the_validation_split_leaves_the_training_unchanged():
    """Same weights and the same training figures with and without evaluations mid-epoch: they
    draw nothing from the trainer's generator and leave the model in train mode."""
    every, ends = validated_run(1), validated_run(None)
    assert len(every.validation.rows) == 7
    for key, value in ends.trainer.model.state_dict().items():
        assert torch.equal(every.trainer.model.state_dict()[key], value), key
    for column in ("acc/train_acc", "loss/train_loss", "acc/test_full", "acc/val"):
        assert [r[column] for r in every.rows] == [r[column] for r in ends.rows], column


def test_training_time_leaves_validation_mid_epoch_out():
    run = validated_run(1, pause=0.3)  # two evaluations inside each epoch's training clock
    assert run.rows[-1]["compute/train_time_s"] < run.rows[-1]["compute/time_s"] - 7 * 0.3


def test_a_resumed_run_keeps_its_validation_rows():
    run = validated_run(2)
    again = ExperimentRun("x", trainer(subsample(Cifar(*make_arrays(6, 2)), None, None, 2)),
                          [Phase("dense", 2, np.arange(40), 0)], CLASSES, out=None, val_every=2)
    again.load_state_dict(run.state_dict())
    assert again.validation.rows == run.validation.rows and again.validation.rows[-1]["step"] == 6
