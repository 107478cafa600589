"""The one error type a user mistake raises; the CLI prints it on one line."""


class UserError(Exception):
    """Bad input: a missing file, a malformed review, a wrong parameter. Shown without a traceback."""
