"""What every stage script shares: an expected error ends it with one line, no traceback."""

import functools
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


def seed_arg(argv: list[str], usage: str) -> int:
    """The one seed a per-seed stage runs (DVC's matrix passes it on the command line)."""
    if len(argv) != 1 or not argv[0].isdigit():
        raise SelError(f"usage: {usage} (a seed from params.yaml's seeds)")
    return int(argv[0])
