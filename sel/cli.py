"""What every stage script shares: an expected error ends it with one line, no traceback."""

import functools
import sys

from .errors import SelError


def stage(main):
    """Run a stage's main(): a SelError ends it with one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SelError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
