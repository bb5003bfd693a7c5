"""End to end: `dvc repro` of the whole benchmark on tiny data, the MLflow store it fills, a
no-op second repro, and `dvc exp run -S` of an SEL knob re-running only what reads it."""

import json
import re

import pandas as pd

from builders import CLASSES
from conftest import git_commit, mlflow_runs, run

EPOCHS = {"baseline": 1, "lottery": 1, "sel95": 5, "warmup_sel": 6}
PER_EPOCH = (["stage", "train_acc", "train_loss", "test_full", "test_100", "sparsity", "time_s",
              "flops_proxy_T", "flops_executed_T", "flops_eval_T"]
             + [f"{kind}_{c}" for kind in ("acc", "E", "C") for c in CLASSES])


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@]+)'", output))


def test_repro_tracks_every_run_and_exp_run_reruns_only_sel(project):
    first = run(["dvc", "repro"], project)
    assert ran_stages(first.stdout) == {"download", "sort", "calibrate", "train_baseline", "train_lottery",
                                        "train_sel95", "train_warmup_sel", "aggregate"}

    client, runs = mlflow_runs(project)
    assert set(runs) == set(EPOCHS) | {"aggregate"}
    for name, epochs in EPOCHS.items():
        (r,) = runs[name]
        assert r.info.status == "FINISHED"
        assert r.data.params["model.width"] == "8"
        assert r.data.tags["data.variant"] == "class-folders:tiny-cifar.tar.gz"
        assert len(r.data.tags["data.sha256"]) == 64
        for key in PER_EPOCH:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (name, key, steps)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"history.csv", "summary.json", f"{name}.png"} <= artifacts
        history = pd.read_csv(project / "metrics" / name / "history.csv")
        assert len(history) == epochs and set(PER_EPOCH) <= set(history.columns)
    assert "sel.gamma_decay" in runs["sel95"][0].data.params
    assert "sel.gamma_decay" not in runs["baseline"][0].data.params
    summary = json.loads((project / "metrics" / "summary.json").read_text())
    assert [r["experiment"] for r in summary["experiments"]] == list(EPOCHS)
    assert "| SEL-95 |" in (project / "metrics" / "summary.md").read_text()

    second = run(["dvc", "repro"], project)
    assert ran_stages(second.stdout) == set(), second.stdout

    plots = run(["dvc", "plots", "show", "--json"], project)
    assert "test_accuracy" in plots.stdout and "sel95_embarrassment" in plots.stdout

    git_commit(project, "tiny run")
    exp = run(["dvc", "exp", "run", "-n", "tweak", "-S", "sel.gamma_decay=0.5"], project)
    assert ran_stages(exp.stdout) == {"train_sel95", "train_warmup_sel", "aggregate"}, exp.stdout
    client, runs = mlflow_runs(project)
    assert len(runs["baseline"]) == len(runs["lottery"]) == 1
    for name in ("sel95", "warmup_sel"):
        tagged = [r for r in runs[name] if r.data.tags.get("dvc.exp_name") == "tweak"]
        assert len(tagged) == 1 and tagged[0].data.params["sel.gamma_decay"] == "0.5"
