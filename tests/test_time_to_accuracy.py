"""Time-to-accuracy (issue 22): each run's history holds its training seconds with evaluation
apart, and the aggregate reports, per experiment, what the runs spent to first reach fractions of
the baseline's final mean accuracy, "not reached" included."""

import time

import numpy as np
import pandas as pd
import pytest
import torch

from builders import make_arrays
from sel.data.dataset import Cifar, held_out_indices
from sel.experiments.plan import ExperimentRun, Phase
from sel.report.summary import (_time_to_accuracy_lines, headline, markdown, mlflow_metrics, spent_to_reach,
                                summarise, time_to_accuracy)
from sel.config.params import ModelParams
from sel.train.model import fresh_model
from sel.train.training import Trainer


def history(accuracy, flops, seconds) -> pd.DataFrame:
    return pd.DataFrame({"epoch": range(1, len(accuracy) + 1), "acc/test_full": accuracy,
                         "compute/flops_executed_T": flops, "compute/train_time_s": seconds})


def test_the_first_epoch_at_or_above_the_target_gives_what_was_spent():
    h = history([0.5, 0.8, 0.9, 0.85], [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])
    assert spent_to_reach(h, 0.85) == {"compute/flops_executed_T": 3.0, "compute/train_time_s": 30.0}
    assert spent_to_reach(h, 0.8) == {"compute/flops_executed_T": 2.0, "compute/train_time_s": 20.0}
    assert spent_to_reach(h, 0.95) is None


def hand_made():
    """The baseline ends at 0.8 and 1.0 (mean 0.9: targets 0.81, 0.855, 0.9); `method` reaches
    90% at epochs 1 and 2, 95% at epoch 2 in both seeds and 100% in seed 1 only."""
    histories = {"baseline": {1: history([0.5, 0.8], [5, 10], [50, 100]),
                              2: history([0.6, 1.0], [5, 10], [50, 100])},
                 "method": {1: history([0.82, 0.95], [1, 2], [5, 10]),
                            2: history([0.7, 0.86], [1, 2], [6, 12])}}
    summaries = {name: {seed: {"acc/test_full": h["acc/test_full"].iloc[-1]} for seed, h in by_seed.items()}
                 for name, by_seed in histories.items()}
    return summarise(summaries, {}, histories)


def test_time_to_accuracy_over_seeds_with_not_reached():
    rows = {(r["experiment"], r["target"]): r for r in hand_made()["time_to_accuracy"]}
    r90, r95, r100 = (rows["method", t] for t in (0.9, 0.95, 1.0))
    assert r90["accuracy"] == pytest.approx(0.81) and r90["reached"] == [1, 2]
    assert r90["compute/flops_executed_T"]["mean"] == 1.5 and r90["compute/train_time_s"]["mean"] == 8.5
    assert r90["compute/train_time_s"]["ci_low"] < 8.5 < r90["compute/train_time_s"]["ci_high"]
    assert r95["compute/flops_executed_T"]["mean"] == 2 and r95["compute/train_time_s"]["mean"] == 11
    assert r100["reached"] == [1] and r100["compute/flops_executed_T"] is None  # one seed of two: no mean
    assert rows["baseline", 0.9]["reached"] == [2]  # seed 1 ends at 0.8, below 0.81


def test_time_to_accuracy_reaches_summary_md_and_mlflow():
    summary = hand_made()
    text = markdown(summary, "note")
    assert "## Time to accuracy" in text
    assert "| method | 100% (90.0%) | not reached (1/2 seeds) | not reached (1/2 seeds) |" in text
    metrics = mlflow_metrics(summary)
    assert metrics["to_acc90/method.flops_executed_T.mean"] == 1.5
    assert metrics["to_acc100/method.reached"] == 1 and "to_acc100/method.train_time_s.mean" not in metrics


def test_headline_holds_what_reaching_90_percent_cost_where_every_seed_did():
    """`dvc exp show` columns: a mean only where every seed got there (the baseline's seed 1
    did not), so a run that mostly fails is not shown as cheap."""
    head = headline(hand_made())
    assert head["method"]["to90_flops_executed_T"] == 1.5 and head["method"]["to90_train_time_s"] == 8.5
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


def test_a_history_without_training_time_reads_not_recorded_not_reached():
    """Runs made before training time was kept apart have no `compute/train_time_s`: their
    FLOPs to a target still count, their training time is "not recorded" (not "not reached")."""
    old = pd.DataFrame({"epoch": [1, 2], "acc/test_full": [0.3, 0.6], "compute/flops_executed_T": [1.0, 2.0]})
    (row,) = [r for r in time_to_accuracy({"baseline": {1: old, 2: old}}, 0.6) if r["target"] == 1.0]
    assert row["reached"] == [1, 2] and row["compute/flops_executed_T"]["mean"] == 2.0
    assert row["compute/train_time_s"] is None and row["unrecorded"] == ["compute/train_time_s"]
    text = "\n".join(_time_to_accuracy_lines([row]))
    assert "not recorded" in text and "not reached" not in text
