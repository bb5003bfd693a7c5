"""The README's two set-up commands stay true: CI runs the same test command."""

from conftest import ROOT


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    test_command = ci[-1]
    assert "pytest" in test_command
    assert f"python3 -m venv .venv && . .venv/bin/activate && {test_command}" in readme
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && dvc repro" in readme
