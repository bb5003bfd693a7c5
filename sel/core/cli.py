"""What every stage script shares: an expected error ends it with one line, no traceback."""

import functools
import os
import signal
import sys

from sel.core.errors import SelError


def stage(main):
    """Run a stage's main(): a SelError ends it with one line on stderr and exit status 2;
    Ctrl-C or SIGTERM (`dvc queue kill`) with one line and status 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            return main(*args, **kwargs)
        except SelError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: a training stage goes on from its last finished epoch when "
                  "run again", file=sys.stderr)
            sys.exit(130)

    return wrapper


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def stage_args(argv: list[str], usage: str, items: dict[str, list[str]]) -> list[str]:
    """The arguments of a per-seed or per-experiment stage: those on its command line when run
    by hand, else the ones of the item DVC runs, found by its name in DVC_STAGE (`sort@42`,
    `train_dense@baseline-42`). DVC sets that variable and no shell parses it: dvc.yaml's
    commands interpolate nothing from params.yaml, since a name or seed holding a quote breaks
    out of any quoting before a check of ours could run. `items`: each item name this stage has
    under the (validated) params, with its arguments."""
    if argv:
        return list(argv)
    name = os.environ.get("DVC_STAGE")
    if name is None:
        raise SelError(f"usage: {usage}")
    if name not in items:
        raise SelError(f"DVC_STAGE: {shorten(name)!r} is no stage of params.yaml's seeds and experiments "
                       f"(run one by hand as: {usage})")
    return items[name]


def shorten(text: str, limit: int = 120) -> str:
    """`text` cut to a readable length for an error message: its start and its end (a path's
    file name is at its end), and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-(limit // 2):]} ({len(text)} characters)"


def seed_arg(argv: list[str], usage: str) -> int:
    """The one seed a per-seed stage runs."""
    if len(argv) != 1 or not argv[0].isdigit():
        raise SelError(f"usage: {usage} (a seed from params.yaml's seeds)")
    return int(argv[0])
