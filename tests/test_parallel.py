"""`python -m sel.scale.parallel`: the training stages side by side, recorded by DVC as `dvc repro` would."""

import sys

import yaml

from conftest import git_commit, mlflow_runs, run, set_params

EXPERIMENTS = ("baseline", "sel95")


def test_parallel_runs_the_pipeline_with_training_stages_overlapping(project):
    # runs of 10+ epochs, so that each outlasts the lead DVC gives the first (it holds the
    # repository lock while it checks its stage; ~2 s on a slow machine, longer than a 1-epoch run)
    set_params(project, {"train_stages": {"dense": ["baseline"], "sel": ["sel95"], "budget": [], "measured": []},
                         "experiments": {"baseline": {"epochs": 12}}, "sel": {"epochs_per_stage": 3}})
    git_commit(project, "two experiments")
    out = run([sys.executable, "-m", "sel.scale.parallel", "-j", "2"], project)
    assert "[parallel] done" in out.stdout, out.stdout[-2000:]
    assert "[train_sel@sel95-42]" in out.stdout  # each stage's lines, prefixed with its name

    # every stage recorded in dvc.lock, and nothing left for dvc to do
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    trained = {"train_dense@baseline-42", "train_sel@sel95-42"}
    assert trained | {"check_params", "download", "sort@42", "calibrate@42", "aggregate"} == set(lock)
    assert "up to date" in run(["dvc", "status"], project).stdout
    again = run(["dvc", "repro"], project).stdout
    assert "Running stage" not in again, again

    # one FINISHED MLflow run per experiment, and the two ran at the same time
    _, runs = mlflow_runs(project)
    spans = []
    for name in EXPERIMENTS:
        assert [r.info.status for r in runs[name]] == ["FINISHED"], name
        spans.append((runs[name][0].info.start_time, runs[name][0].info.end_time))
    (first, second) = sorted(spans)
    assert second[0] < first[1], spans


def test_parallel_outside_a_dvc_project_is_one_line(tmp_path):
    out = run([sys.executable, "-m", "sel.scale.parallel"], tmp_path, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: dvc stage list failed:") and "not inside of a DVC repository" in lines[0]
