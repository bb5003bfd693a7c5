"""The library's folders show its architecture: one subpackage per concept, imports pointing one
way (a package imports only packages below it), absolute imports (so dvc.yaml's import closure
sees them all), and package files that hold nothing but their docstring."""

import ast

from conftest import ROOT

# Lowest first: a package may import itself and any package before it, never one after it.
LAYERS = ["core", "config", "data", "method", "train", "scoring", "track", "experiments", "report",
          "scale", "speed"]
SEL = ROOT / "sel"


def sel_imports(path):
    """(line, package) of every `sel.<package>` a module imports, and its relative imports."""
    found, relative = [], []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                relative.append(node.lineno)
            elif (node.module or "").startswith("sel."):
                found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("sel.")]
    return found, relative


def test_every_module_sits_in_a_concept_package():
    assert sorted(p.name for p in SEL.glob("*.py")) == ["__init__.py"]
    assert sorted(p.name for p in SEL.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS + ["vendor"])


def test_imports_point_one_way():
    wrong = []
    for path in SEL.rglob("*.py"):
        package = path.relative_to(SEL).parts[0]
        if package == "__init__.py":
            continue
        found, relative = sel_imports(path)
        wrong += [f"{path.relative_to(ROOT)}:{line}: relative import" for line in relative]
        wrong += [f"{path.relative_to(ROOT)}:{line}: {package} imports sel.{target}" for line, target in found
                  if LAYERS.index(target) > LAYERS.index(package)]
    assert not wrong, "\n".join(wrong)


def test_package_files_hold_only_their_docstring():
    for init in SEL.glob("*/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
