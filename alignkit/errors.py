"""User-facing errors: the CLI prints their message as one line and exits with code 2 (no traceback)."""


class AlignkitError(Exception):
    """Bad input from the user: a config key, a data file, a model directory.

    The message must be one line that names the file (and line) or key and says what is allowed.
    """


class ConfigError(AlignkitError):
    """An unknown key, a wrong type or an impossible value in a config."""


class DataError(AlignkitError):
    """A data file that does not fit the record schema (see alignkit/data/formats.py)."""
