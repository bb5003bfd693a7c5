"""Wall-clock that can be trusted (issue 22): a training run records what other training ran on
its host beside it (summary.json `compute/beside_max` and `beside`, the MLflow tag `sel.beside`),
found among real processes; its own, its ancestors' and its workers' command lines are not others."""

import ast
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from builders import make_arrays
from conftest import ROOT, TINY, merge
from sel.data.dataset import Cifar
from sel.report.summary import markdown, summarise
from sel.track.beside import Beside, training_beside, training_name

SLEEP = "import time; time.sleep(120)"


@pytest.fixture
def other_training():
    """A process that looks like another stage's training (`-m pipeline.train dense other SEED`
    in its argv), started detached (through a shell that exits) so it is no descendant of the
    test; yields its name. SEED is this pytest process's pid: a test on another pytest-xdist
    worker starts one of another name, and other training on the host may be seen beside too."""
    seed = os.getpid()
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{SLEEP}' -m pipeline.train dense other {seed} "
                                      ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    yield f"other@{seed}"
    os.kill(pid, signal.SIGTERM)


def test_names_of_what_trains():
    assert training_name(["python", "-m", "pipeline.train", "sel", "sel95", "42"]) == "sel95@42"
    # under DVC the command names nothing: the item's name is in its DVC_STAGE
    assert training_name(["python", "-m", "pipeline.train"], "train_sel@sel95-42") == "sel95@42"
    assert training_name(["python", "-m", "pipeline.train"], "train_dense@lr-1e-3-43") == "lr-1e-3@43"
    assert training_name(["python", "-m", "pipeline.train"]) == "pipeline.train"
    assert training_name(["timeout", "9", "python", "-m", "sel.speed.bench", "--widths", "16"]) == "sel.speed.bench"
    assert training_name(["/bin/sh", "-c", "python -m pipeline.train dense baseline 42"]) is None  # DVC's shell
    assert training_name(["python", "-m", "pipeline.aggregate"]) is None


def test_another_training_is_seen_and_its_own_family_is_not(other_training):
    """Checked from a process that is itself a training's child (a DataLoader worker carries the
    command line of its run) under a training parent: neither of them is `beside`."""
    child = "from sel.track.beside import training_beside; print(training_beside())"
    parent = (f"import subprocess, sys; "
              f"subprocess.run([sys.executable, '-c', {child!r}, 'pipeline.train', 'dense', 'mine', '1'])")
    out = subprocess.run([sys.executable, "-c", parent, "-m", "pipeline.train", "dense", "mine", "1"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    seen = ast.literal_eval(out.stdout)
    assert seen.count(other_training) == 1 and "mine@1" not in seen
    worker = subprocess.Popen([sys.executable, "-c", SLEEP, "-m", "pipeline.train", "dense", "worker", "2"])
    try:
        assert other_training in training_beside() and "worker@2" not in training_beside()
    finally:
        worker.kill()
        worker.wait()


def test_a_stage_that_dvc_runs_is_named_from_its_dvc_stage():
    """dvc.yaml's commands carry no names (`python -m pipeline.train`): the item is read from
    the process's environment."""
    seed = os.getpid()
    out = subprocess.run(["sh", "-c", f"DVC_STAGE=train_sel@via-env-{seed} {sys.executable} -c '{SLEEP}' "
                                      "-m pipeline.train >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    try:
        assert f"via-env@{seed}" in training_beside()
    finally:
        os.kill(int(out.stdout), signal.SIGTERM)


def test_a_resumed_run_keeps_what_its_first_part_saw(other_training):
    """The state travels in the checkpoint (loaded with weights_only): after a resume the peak
    and names of the first part stay, and the new samples add to them."""
    saved = io.BytesIO()
    torch.save({"beside": Beside({"peak": 50, "names": ["earlier@3"]}).state()}, saved)
    saved.seek(0)
    beside = Beside(torch.load(saved, weights_only=True)["beside"])
    beside.sample()
    assert beside.peak == 50 and {"earlier@3", other_training} <= set(beside.summary()["beside"])
    tag = beside.tags()["sel.beside"].split(", ")  # every name seen, sorted, the restored one too
    assert tag == beside.summary()["beside"] == sorted(tag) and {"earlier@3", other_training} <= set(tag)


def test_a_tiny_run_records_what_trained_beside_it(tmp_path, monkeypatch, other_training, migrated_store):
    """A real training run, at the library level (no DVC): summary.json and the MLflow run say
    that the other training trained beside it."""
    from mlflow import MlflowClient

    from sel.config.params import load_params
    from sel.experiments.stage import train_experiment

    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "data").mkdir()
    Cifar(*make_arrays(4, 6)).save(tmp_path / "data" / "cifar10.npz")
    (tmp_path / "data" / "cifar10.json").write_text(json.dumps({"variant": "tiny"}))
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = train_experiment(load_params(), "dense", "baseline", 42)
    assert summary["compute/beside_max"] >= 1 and other_training in summary["beside"]
    written = json.loads((tmp_path / "metrics/runs/baseline/seed42/summary.json").read_text())
    assert written["beside"] == summary["beside"]
    tags = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(summary["mlflow_run_id"]).data.tags
    assert other_training in tags["sel.beside"].split(", ")


def test_summary_md_marks_the_times_measured_beside_other_training():
    """The Time and Training columns of an experiment any of whose seeds ran beside other
    training carry the mark, and a footnote says which seed ran beside what; the others none."""
    run = {"acc/test_full": 0.5, "acc/test_100": 0.5, "compute/flops_proxy_T": 1.0,
           "compute/flops_executed_T": 2.0, "compute/time_s": 30.0, "compute/train_time_s": 20.0}
    summaries = {"baseline": {1: {**run, "beside": []}, 2: run},
                 "sel95": {1: {**run, "beside": ["lottery@1", "sel.speed.bench"]}, 2: {**run, "beside": []}}}
    text = markdown(summarise(summaries, {}), "note")
    rows = {}  # the results table's row of each system (the first table naming it)
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    assert "30 ± 0 † | 20 ± 0 † |" in rows["SEL-95"] and rows["SEL-95"].count("†") == 2
    assert "†" not in rows["Baseline"]
    # baseline's seed 2 predates the record: its times are marked unknown, not clean
    assert rows["Baseline"].count(" ?") == 2 and " ?" not in rows["SEL-95"]
    assert "did not record whether other training ran beside them" in text
    assert "SEL-95: seed 1 beside lottery@1 sel.speed.bench." in text
