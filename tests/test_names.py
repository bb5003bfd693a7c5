"""Names that reach a shell, a path, an MLflow key or a web page follow one rule (sel/config/names.py),
checked where they enter; dvc.yaml's commands quote what they interpolate as well."""

import pytest

from conftest import run, set_params
from sel.core.errors import SelError
from sel.config.names import check_name, check_names

CIFAR100 = ["aquarium_fish", "maple_tree", "sweet_pepper", "lawn_mower", "pickup_truck", "willow_tree"]
EVIL = "x$(touch PWNED)"  # relative: a stage runs at the project root
QUOTED = "';touch PWNED;'"  # breaks out of single quotes: '${item.experiment}' would run it


@pytest.mark.parametrize("name", ["baseline", "sel95.v2", "lr-1e-3", "Warmup_SEL", "a" * 64, *CIFAR100])
def test_names_as_cifar_and_params_spell_them_pass(name):
    assert check_name("here", name) == name


@pytest.mark.parametrize("name", ["", "a b", "it's", "../../tmp/evil", "a/b", ".hidden", "-rf", "a" * 65,
                                  "<!--<script", "x\n", EVIL, None, 3])
def test_a_name_outside_the_rule_is_refused_in_one_line_naming_it_and_the_rule(name):
    with pytest.raises(SelError) as e:
        check_name("params: train_stages.dense.2", name)
    assert str(e.value).startswith(f"params: train_stages.dense.2: {name!r} is not a valid name: use 1-64 ")
    assert "\n" not in str(e.value)


def test_names_that_share_their_keys_are_refused():
    assert check_names("label_names", CIFAR100) == CIFAR100
    with pytest.raises(SelError, match="label_names: 'cat' appears more than once"):
        check_names("label_names", ["cat", "dog", "cat"])


@pytest.mark.unprepared  # download must be due, so that its not running shows check_params stopped it
def test_a_shared_params_yaml_cannot_run_a_command_through_dvc_repro(project):
    set_params(project, {"experiments": {EVIL: {"recipe": "dense", "epochs": 1}},
                         "train_stages": {"dense": ["baseline", EVIL]}})
    refused = f"error: params: experiments: {EVIL!r} is not a valid name: use 1-64 letters"
    out = run(["dvc", "repro"], project, check=False)
    assert not (project / "PWNED").exists()
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(refused), out.stderr
    assert "Running stage 'download'" not in out.stdout


@pytest.mark.parametrize("override, item, refused", [
    ({"experiments": {f"x{QUOTED}": {"recipe": "dense", "epochs": 1}},
      "train_stages": {"dense": ["baseline", f"x{QUOTED}"]}}, f"train_dense@x{QUOTED}-42", "experiments"),
    ({"seeds": [f"42{QUOTED}"]}, f"train_dense@baseline-42{QUOTED}", "seeds.0"),
    ({"seeds": [f"42{QUOTED}"]}, f"sort@42{QUOTED}", "seeds.0")])
def test_a_stage_run_on_its_own_runs_no_command_from_a_name_or_seed(project, override, item, refused):
    """`dvc repro --single-item` and `dvc exp run -s` run one stage and skip check_params: no
    command interpolates a value of params.yaml, so a quote in a name or seed ends nowhere but
    in the stage's own check, one line naming the key."""
    set_params(project, override)
    for cmd in (["dvc", "repro", "--single-item", item], ["dvc", "exp", "run", "-s", item]):
        out = run(cmd, project, check=False)
        assert not (project / "PWNED").exists(), (cmd, out.stdout, out.stderr)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("error: ")]
        assert out.returncode != 0 and errors and errors[0].startswith(f"error: params: {refused}"), (cmd, out.stderr)
