"""The one rule for names that travel: experiments, attribution factors, curriculum stages,
classes and sweeps end up in shell commands (dvc.yaml's `cmd`), file paths, DVC stage names,
MLflow keys and the results page. A name that is harmless in all of them is checked where it
enters, so that a shared params.yaml, sweep grid or archive cannot run a command, write outside
its folder or break a page, and a bad name fails before any work rather than mid-training.
"""

import re

from sel.core.errors import SelError

# A strict subset of what MLflow keys, DVC stage names and file names accept, with no shell
# metacharacters, no `..`, no leading '-' or '.'; CIFAR-100's `aquarium_fish` passes.
PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RULE = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"


def check_name(where: str, name) -> str:
    """`name`, if it follows the rule; else a SelError naming it, where it came from and the rule."""
    if not isinstance(name, str) or not PATTERN.fullmatch(name):
        raise SelError(f"{where}: {name!r} is not a valid name: use {RULE} (names reach shell "
                       f"commands, file paths, MLflow keys and the results page)")
    return name


def check_names(where: str, names: list) -> list:
    """Each of `names` checked, and none twice (two classes of one name would share their keys)."""
    seen = set()
    for name in names:
        check_name(where, name)
        if name in seen:
            raise SelError(f"{where}: {name!r} appears more than once; names must be distinct")
        seen.add(name)
    return names


LABELS = {"baseline": "Baseline", "lottery": "Lottery Ticket", "sel95": "SEL-95", "warmup_sel": "Warmup+SEL"}


def label(experiment: str) -> str:
    """The name an experiment is shown under: the original's for its four, else its params name."""
    return LABELS.get(experiment, experiment)
