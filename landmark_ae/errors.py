"""Expected failures: shown to the user as one or two lines, never as a traceback."""


class UserError(Exception):
    """Something the user can fix (a path, a config value, a missing step); exit code 2."""

    exit_code = 2
