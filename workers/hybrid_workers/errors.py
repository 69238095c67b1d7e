"""Error types shared by the workers: a user-facing error carries a one-line, actionable message."""


class UserError(Exception):
    """Bad input from a user (flag, path, request): the message says what was wrong and what to do.

    The command line prints it as one line and exits with status 2; the HTTP API maps it to a 4xx.
    """
