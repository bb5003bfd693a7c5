"""The README and docs/ stay true: CI runs the README's test command, every link resolves to a
file and a heading, and every module, file and protocol a command names exists."""

import re

import pytest

from conftest import ROOT
from sel.config.protocols import PROTOCOLS

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    test_command = ci[-1]
    assert "pytest" in test_command
    assert f"python3 -m venv .venv && . .venv/bin/activate && {test_command}" in readme
    assert "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && dvc repro" in readme


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert {p.name for p in PAGES[1:]} <= set(re.findall(r"docs/(\w+\.md)", readme))  # every page linked


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, fragment = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists(), f"{page.name}: {target}"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            assert fragment in {anchor(h) for h in headings}, f"{page.name}: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_module_file_and_protocol_named_exists(page):
    text = page.read_text()
    for module in re.findall(r"python -m ((?:sel|pipeline)(?:\.\w+)+)", text):
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), f"{page.name}: python -m {module}"
    for path in re.findall(r"`((?:sel|pipeline|tests)/[\w/]+\.py)", text):
        assert (ROOT / path).exists(), f"{page.name}: {path}"
    for name in re.findall(r"python -m sel\.config\.protocols ([\w-]+)", text):
        assert name in PROTOCOLS, f"{page.name}: protocol {name}"
