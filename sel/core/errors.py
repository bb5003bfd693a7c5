"""The one exception type for expected failures: bad input, unreachable sources, bad params."""


class SelError(Exception):
    """A failure the user can fix; stage scripts print its message as one line, no traceback."""
