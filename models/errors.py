"""User-facing errors of ssamba-bench.

`UserInputError` marks a mistake the user can fix (a wrong shape, an unknown name, a bad option). The
command line prints its message as one line, without a traceback; library callers get a ValueError.
"""


class UserInputError(ValueError):
    """Bad input from the user; the message says what was wrong and what to do."""
