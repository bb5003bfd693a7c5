"""dvc.yaml stays honest: each stage lists exactly the params it reads (sel.config.params.stage_keys)
and exactly the library files its script imports, directly or through other sel modules; the
dense runs depend on nothing of SEL."""

import ast
from pathlib import Path

import yaml

from conftest import ROOT
from sel.config.params import Params, plan_reads_sel, stage_keys

STAGES = {name: stage.get("do", stage) for name, stage in  # foreach stages keep theirs under `do`
          yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}


def library_closure(script: Path) -> set[str]:
    """The sel/**/*.py files `script` imports, followed through sel's own imports (the library
    imports absolutely: tests/test_layout.py)."""
    found, todo = set(), [script]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sel."):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("sel.")]
            for name in names:
                file = name.replace(".", "/") + ".py"
                if (ROOT / file).exists() and file not in found:
                    found.add(file)
                    todo.append(ROOT / file)
    return found


def stage_script(stage: dict) -> Path:
    module = stage["cmd"].split()[2]  # python -m pipeline.<name> [args]
    return ROOT / (module.replace(".", "/") + ".py")


def test_every_stage_lists_the_params_it_reads():
    assert set(STAGES) == {"check_params", "download", "sort", "calibrate", "train_dense", "train_sel", "train_budget",
                           "train_measured", "aggregate"}
    assert STAGES["check_params"]["params"] == [{"params.yaml": None}]  # the whole file
    assert "data/params-checked" in STAGES["download"]["deps"]
    for name, stage in (item for item in STAGES.items() if item[0] != "check_params"):
        assert sorted(stage["params"]) == sorted(stage_keys(name)), name
    dense = STAGES["train_dense"]  # SEL knobs, sort and calibrate never re-run the dense runs
    assert not [p for p in dense["params"] if p.startswith(("sel", "calibrate", "sort"))]
    assert not [d for d in dense["deps"] if "pools" in d or "gamma" in d]
    assert {"data/seed${item.seed}/pools.npz", "data/seed${item.seed}/gamma.json"} <= set(STAGES["train_sel"]["deps"])


def test_the_default_experiments_sit_in_the_stage_that_depends_on_what_they_read():
    params = Params()
    assert params.train_stages.dense[:2] == ("baseline", "lottery")
    assert not any(plan_reads_sel(params, n) for n in params.train_stages.dense)
    assert all(plan_reads_sel(params, n) for n in params.train_stages.sel)
    # a budget naming another experiment: the stage that depends on every experiment's knobs
    assert set(params.train_stages.budget + params.train_stages.trained("measured")) == \
        {n for n, e in params.experiments.items() if isinstance(e.budget, str)}
    # a twin sized from a measured run depends on that run's summary, of its seed
    assert "metrics/runs/${item.experiment}/seed${item.seed}/summary.json" in STAGES["train_measured"]["deps"]
    assert {"experiments", "sel"} <= set(STAGES["train_budget"]["params"])
    assert not [d for d in STAGES["train_budget"]["deps"] if "pools" in d or "gamma" in d]
    assert set(params.train_stages.names()) == set(params.experiments)


def test_every_stage_lists_the_library_code_it_runs():
    for name, stage in STAGES.items():
        script = stage_script(stage)
        listed = {d for d in stage["deps"] if d.startswith("sel/") and d.endswith(".py")}
        closure = library_closure(script)
        assert str(script.relative_to(ROOT)) in stage["deps"], name
        assert listed == closure, (name, sorted(closure ^ listed))
        # the results page inlines the vendored scripts: a stage that writes it depends on them
        assert ("sel/vendor" in stage["deps"]) == ("sel/report/results_page.py" in closure), name


def test_the_closure_follows_imports():
    closure = library_closure(ROOT / "pipeline" / "download.py")
    assert {"sel/data/sources.py", "sel/data/dataset.py", "sel/core/errors.py"} <= closure
    assert "sel/train/training.py" not in closure


def test_no_command_interpolates_a_value_from_params():
    """A name or seed holding a quote breaks out of any quoting, and `dvc repro --single-item`
    skips check_params: a per-item stage reads its item from DVC_STAGE (tests/test_names.py)."""
    for name, stage in STAGES.items():
        assert "${" not in stage["cmd"], (name, stage["cmd"])
