"""User-facing errors: the CLI prints their message as one line, without a traceback."""


class PadError(Exception):
    """Bad input or a failed load; the message names the file, line, field or value."""
