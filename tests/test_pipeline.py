"""End to end: `dvc repro` of the whole benchmark on tiny data, the MLflow store it fills, a
no-op second repro, and `dvc exp run -S` of an SEL knob and of a seed added to the list,
re-running only what reads the knob, that seed's stages and the aggregate."""

import json
import re

import pandas as pd
import pytest

from browser import drawn_charts, rendered_dom
from builders import CLASSES
from conftest import git_commit, mlflow_runs, run, set_params
from sel.experiments.validation import COLUMNS
from sel.report.summary import NO_VALIDATION

# the last 2 of each class's 12 training images form the validation split, evaluated every 2 steps;
# dense_at_sel95: sel95's 120 images (windows of 2+3+2+2+3 of the 10 per class left), one epoch of 100 and 20
EPOCHS = {"baseline": 1, "lottery": 1, "sel95": 5, "warmup_sel": 6, "sel_random_order": 5, "dense_at_sel95": 2}
SEL_RUNS = ("sel95", "warmup_sel", "sel_random_order")
READS_SEL = {f"train_sel@{n}" for n in SEL_RUNS} | {"train_budget@dense_at_sel95"}  # a budget reads sel95's plan
PER_EPOCH = (["schedule/stage", "acc/train_acc", "loss/train_loss", "acc/test_full", "acc/test_100",
              "sparsity/sparsity", "sparsity/params_changed", "sparsity/gamma", "compute/time_s", "compute/train_time_s",
              "compute/flops_proxy_T", "compute/flops_executed_T", "compute/flops_eval_T", "acc/val"]
             + [f"{kind}/{c}" for kind in ("class_acc", "E", "C") for c in CLASSES])


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", output))


def stages_of_seed(seed: int) -> set[str]:
    return ({f"sort@{seed}", f"calibrate@{seed}"} | {f"train_dense@{n}-{seed}" for n in ("baseline", "lottery")}
            | {f"{stage}-{seed}" for stage in READS_SEL})


@pytest.mark.unprepared  # its first repro runs every stage
def test_repro_tracks_every_run_and_exp_run_reruns_only_what_changed(project):
    set_params(project, {"data": {"val_per_class": 2}, "train": {"val_every": 2}})
    first = run(["dvc", "repro"], project)
    assert ran_stages(first.stdout) == {"check_params", "download", "aggregate"} | stages_of_seed(42)

    client, runs = mlflow_runs(project)
    assert set(runs) == set(EPOCHS)  # the aggregate sits in an experiment of its own
    for name, epochs in EPOCHS.items():
        (r,) = runs[name]
        assert r.info.status == "FINISHED" and r.info.run_name == f"{name}@42"
        assert r.data.tags["seed"] == "42" and r.data.params["seed"] == "42"
        assert r.data.params["model.width"] == "8" and r.data.params["experiment"] == name
        assert r.data.tags["data.variant"] == "class-folders:tiny-cifar.tar.gz"
        assert len(r.data.tags["data.sha256"]) == 64
        for key in PER_EPOCH:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            first = 2 if name == "warmup_sel" and key.startswith(("E/", "C/")) else 1  # warm-up: no E/C
            assert sorted(steps) == list(range(first, epochs + 1)), (name, key, steps)
        assert {"acc/test_full", "compute/flops_executed_T", "sparsity/sparsity", "E/cat",
                "class_acc/cat", "compute/beside_max"} <= set(r.data.metrics) and "sel.beside" in r.data.tags
        assert r.data.params["epochs"] == str(epochs) and "pretrain_epochs" in r.data.params
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"history.csv", "summary.json", f"{name}@42.png"} <= artifacts
        history = pd.read_csv(project / "metrics" / "runs" / name / "seed42" / "history.csv")
        assert len(history) == epochs and set(PER_EPOCH) <= set(history.columns)
        validation = pd.read_csv(project / "metrics" / "runs" / name / "seed42" / "validation.csv")
        assert tuple(validation.columns) == COLUMNS and validation["step"].iloc[0] == 0
        assert validation["epoch"].iloc[-1] == epochs and validation["acc/val"].iloc[-1] == history["acc/val"].iloc[-1]
        assert "validation.csv" in artifacts
    # the baseline's 100 images in batches of 32: 4 steps; evaluated at steps 0, 2 and 4 (its end)
    baseline = pd.read_csv(project / "metrics" / "runs" / "baseline" / "seed42" / "validation.csv")
    assert baseline["step"].tolist() == [0, 2, 4] and baseline["epoch"].tolist() == [0, 0.64, 1]
    assert json.loads((project / "data" / "cifar10.json").read_text())["counts"]["val"]["cat"] == 2
    assert runs["lottery"][0].data.params["pretrain_epochs"] == "1"
    assert runs["sel95"][0].data.params["exp.recipe"] == "curriculum"
    assert "sel.gamma_decay" in runs["sel95"][0].data.params
    assert "sel.gamma_decay" not in runs["baseline"][0].data.params
    summary = json.loads((project / "metrics" / "summary.json").read_text())
    assert [e["experiment"] for e in summary["experiments"]] == list(EPOCHS) and summary["seeds"] == [42]
    assert "| SEL-95 | 1 |" in (project / "metrics" / "summary.md").read_text()
    assert (project / "metrics" / "curves" / "sel95.csv").exists()
    _, aggregates = mlflow_runs(project, "sel-benchmark-aggregate")
    (aggregate,) = aggregates["aggregate"]
    assert aggregate.info.status == "FINISHED" and aggregate.info.run_name == "aggregate"
    assert {"summary.png", "summary.svg", "results.html"} <= {a.path for a in client.list_artifacts(aggregate.info.run_id)}
    assert "test_full/sel95.mean" in aggregate.data.metrics
    # the baseline reaches its own final accuracy (one seed): the histories reach the aggregate
    assert aggregate.data.metrics["to_acc100/baseline.reached"] == 1
    assert "## Time to accuracy" in (project / "metrics" / "summary.md").read_text()
    assert NO_VALIDATION not in (project / "metrics" / "summary.md").read_text()
    assert len(drawn_charts(rendered_dom(project / "metrics" / "results.html"))) == 16  # time to accuracy too
    assert {"to90_flops_executed_T", "to90_train_time_s"} <= \
        set(json.loads((project / "metrics" / "headline.json").read_text())["baseline"])

    second = run(["dvc", "repro"], project)
    assert ran_stages(second.stdout) == set(), second.stdout

    plots = run(["dvc", "plots", "show", "--json"], project)
    assert "test_accuracy" in plots.stdout and "embarrassment" in plots.stdout
    run(["dvc", "plots", "show"], project)  # the page it writes draws offline, every plot
    page = (project / "dvc_plots" / "index.html").read_text()
    assert "cdn." not in page and "sel/vendor/vega.min.js" in page
    assert len(drawn_charts(rendered_dom(project / "dvc_plots" / "index.html"))) == 10

    # an SEL knob re-runs only the runs that read it; a seed added to the list runs that seed's
    # stages; nothing else runs but the params check and the aggregate (one exp run shows both)
    git_commit(project, "tiny run")
    exp = run(["dvc", "exp", "run", "-n", "tweak", "-S", "sel.gamma_decay=0.5", "-S", "seeds=[42,43]"], project)
    assert ran_stages(exp.stdout) == ({f"{stage}-42" for stage in READS_SEL} | stages_of_seed(43)
                                      | {"check_params", "aggregate"}), exp.stdout
    client, runs = mlflow_runs(project)
    assert len(runs["baseline"]) == len(runs["lottery"]) == 2  # seed 42's did not run again
    for name in EPOCHS:
        (new,) = [r for r in runs[name] if r.data.tags["seed"] == "43"]
        assert new.info.run_name == f"{name}@43" and new.data.tags["dvc.exp_name"] == "tweak"
    for name in SEL_RUNS:
        tagged = [r for r in runs[name] if r.data.tags.get("dvc.exp_name") == "tweak"]
        assert len(tagged) == 2 and {r.data.params["sel.gamma_decay"] for r in tagged} == {"0.5"}
    summary = json.loads((project / "metrics" / "summary.json").read_text())
    assert summary["seeds"] == [42, 43]
    for e in summary["experiments"]:
        test = e["metrics"]["acc/test_full"]
        assert test["n"] == 2 and test["ci_low"] <= test["mean"] <= test["ci_high"], e["experiment"]
