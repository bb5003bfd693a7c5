"""Issue 29: bad input, special files and failed writes end in one line naming the problem,
through the real entry points where a run is cheap, with the outputs as they were."""

import errno
import os
import sys

import pandas as pd
import pytest
import yaml

from builders import make_arrays, write_class_folder_tar, write_class_folders, write_python_archive
from conftest import ROOT, env_for_stages, mlflow_runs, run, set_params
from sel.core.errors import SelError
from sel.core.files import staged_outputs
from sel.train.checkpoint import Checkpoint


def stage(tmp_path, module, params: dict, *args, timeout=120):
    """`python -m module` in a bare folder holding only params.yaml; its one error line."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**env_for_stages(), "PYTHONPATH": str(ROOT)}  # the stage scripts, from this checkout
    out = run([sys.executable, "-m", module, *args], tmp_path, check=False, timeout=timeout, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    return out.stderr.strip()


def ONLY(name):
    return {"dense": [name], "sel": [], "budget": [], "measured": []}


@pytest.mark.parametrize("params, says", [
    ({"seeds": [2**32]}, "params: seeds = [4294967296]: must be distinct integers from 0 to 2**32 - 1"),
    ({"seeds": [10**26]}, "params: seeds = [100000000000000000000000000]"),
    ({"experiments": {"baseline": {"epochs": 0}}, "train_stages": ONLY("baseline")}, "experiments.baseline.epochs = 0: it would record no epoch"),
    ({"experiments": {"lottery": {"epochs": 0}}, "train_stages": ONLY("lottery")}, "experiments.lottery.epochs = 0: it would record no epoch"),
    ({"sel": {"epochs_per_stage": 0}}, "sel.epochs_per_stage = 0: experiment sel95 (a curriculum without warm-up)"),
    ({"mlflow": {"experiment": "x" * 10**7}}, "(10000002 characters): must be 1 to 500 characters"),
])
def test_check_params_refuses_in_one_short_line(tmp_path, params, says):
    line = stage(tmp_path, "pipeline.check_params", params)
    assert says in line and len(line) < 400, line


@pytest.mark.parametrize("grid, params, says", [
    ({"name": "x", "grid": {"model.width.x": [1]}}, {"model": {"width": 8}}, "override model.width.x: model.width is int, not a mapping"),
    ({"name": "x", "grid": {"sel.stages.0.start": [0.1]}}, {"sel": {"stages": [{"name": "a"}]}},
     "override sel.stages.0.start: sel.stages is list, not a mapping"),
    ({"name": "x", "seeds": [2**32]}, {}, "`seeds` must be a non-empty list of integers from 0 to 2**32 - 1"),
    ({"name": "x"}, "seeds: [42\n", "cannot read"),
    ({"name": "x", "experiments": ["nope"]}, "", "experiment 'nope' is not in train_stages"),  # empty: defaults
])
def test_a_sweep_refuses_in_one_line(tmp_path, grid, params, says):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    text = params if isinstance(params, str) else yaml.safe_dump(params)
    (tmp_path / "params.yaml").write_text(text)
    out = run([sys.executable, "-m", "sel.scale.sweep", "grid.yaml"], tmp_path, check=False, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and says in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and not (tmp_path / "sweeps").exists()


def test_download_refuses_bad_sources_before_opening_them(tmp_path):
    one_class = write_class_folders(tmp_path / "one", make_arrays(2, 2, classes=["cat"]))
    one_label = write_python_archive(tmp_path / "one-label.tar.gz", make_arrays(5, 2, classes=["cat"]))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for source, says in [(str(one_class), "1 class folder(s) (cat); at least two classes"),
                         (str(one_label), "label_names holds 1 name(s) (cat); at least two classes"),
                         ("x" * 300, "(3"), (str(fifo), "is a FIFO; only an archive file or a folder"),
                         ("/dev/zero", "/dev/zero is a character device")]:
        line = stage(tmp_path, "pipeline.download", {"data": {"source": source, "md5": None}}, timeout=60)
        assert says in line and len(line) < 300, line
        assert not (tmp_path / "data" / "cifar10.npz").exists()


def test_a_dollar_in_a_figure_title_is_text(tmp_path):
    from sel.track.figures import run_figure

    history = pd.DataFrame({"epoch": [1, 2], "acc/train_acc": [0.1, 0.2], "acc/test_full": [0.1, 0.2],
                            "acc/test_100": [0.1, 0.2], "sparsity/sparsity": [0, 0],
                            "sparsity/params_changed": [1, 1], "E/cat": [1, 1], "C/cat": [0, 0]})
    run_figure(history, r"baseline on $\x$.tar.gz", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


def test_outputs_under_a_file_where_a_folder_goes_fail_in_one_line(tmp_path):
    """Read-only by chmod does not stop root; a file where the folder goes stops everyone."""
    (tmp_path / "metrics").write_text("")
    with pytest.raises(SelError, match=r"cannot write .*metrics.*: (Not a directory|File exists)"):
        with staged_outputs(tmp_path / "metrics" / "runs" / "h.csv") as (tmp,):
            tmp.write_text("x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_fails_in_one_line(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics").chmod(0o500)
    with pytest.raises(SelError, match="cannot write .*Permission denied"):
        with staged_outputs(tmp_path / "metrics" / "h.csv") as (tmp,):
            tmp.write_text("x")


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ckpt = Checkpoint("exp-seed1", {"lr": 0.1}, [], folder=tmp_path)
    ckpt.save({"epoch": 1})
    good = ckpt.path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("sel.train.checkpoint.torch.save", full)
    with pytest.raises(SelError, match="cannot write .*exp-seed1.*: No space left on device"):
        ckpt.save({"epoch": 2})
    assert ckpt.path.read_bytes() == good and [p.name for p in tmp_path.glob("*.pt*")] == [ckpt.path.name]
    monkeypatch.setattr("sel.core.files.os.replace", full)
    (tmp_path / "out.json").write_text("old")
    with pytest.raises(SelError, match="cannot write .*: No space left on device"):
        with staged_outputs(tmp_path / "out.json") as (tmp,):
            tmp.write_text("new")
    assert (tmp_path / "out.json").read_text() == "old"


def test_a_budget_of_no_image_is_refused_by_the_training_stage_in_one_line(tmp_path):
    source = write_class_folders(tmp_path / "src", make_arrays(4, 2))
    params = {"data": {"source": str(source), "md5": None, "held_out_per_class": 1},
              "model": {"width": 4, "pretrained": False},
              "experiments": {"tiny": {"recipe": "dense", "epochs": 1, "budget": 0.001}},
              "train_stages": ONLY("tiny"), "attribution": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**env_for_stages(), "PYTHONPATH": str(ROOT)}
    run([sys.executable, "-m", "pipeline.download"], tmp_path, env=env)
    out = run([sys.executable, "-m", "pipeline.train", "dense", "tiny", "42"], tmp_path, check=False, env=env)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]  # MLflow logs its store's creation
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(errors) == 1, out.stderr
    assert "experiments.tiny.budget = 0.001: it allows no image of its 1 epochs x 40 training images" in errors[0]
    assert not (tmp_path / "metrics").exists() and not list(tmp_path.glob("checkpoints/*.pt"))


def test_an_unwritable_output_under_dvc_fails_in_one_line_then_the_run_finishes(project, tmp_path):
    """metrics/ unwritable under `dvc repro` (a file where a run's folder goes: root ignores
    chmod): one line naming the path and the error, before any training; then, the path freed,
    the run finishes, its source's file name holding a dollar-backslash-x-dollar (figure text, not mathtext)."""
    source = tmp_path / "ti$\\x$ny.tar.gz"
    write_class_folder_tar(source, make_arrays(12, 6))
    set_params(project, {"data": {"source": str(source)}})
    blocker = project / "metrics" / "runs" / "baseline" / "seed42"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    out = run(["dvc", "repro", "train_dense@baseline-42"], project, check=False)
    text = out.stderr + out.stdout
    assert out.returncode != 0 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith(("ERROR", "error: "))]
    assert len(errors) == 1 and "metrics/runs/baseline/seed42" in errors[0] and "Not a directory" in errors[0], errors
    assert "[baseline@42] epoch" not in text  # refused before any training
    blocker.unlink()
    run(["dvc", "repro", "train_dense@baseline-42"], project)
    _, runs = mlflow_runs(project)
    (finished,) = runs["baseline"]
    assert finished.info.status == "FINISHED" and "ti$\\x$ny" in finished.data.tags["data.variant"]
