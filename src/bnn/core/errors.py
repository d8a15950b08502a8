"""Errors a user can fix, as opposed to bugs.

Stage scripts catch :class:`UserError` and print its message in one line, with
no traceback (see :func:`bnn.core.cli.run_stage`). Every message names the fix.
"""


class UserError(Exception):
    """Base class of the errors caused by input or configuration."""


class ConfigError(UserError, ValueError):
    """An impossible or unknown configuration value."""


class DataError(UserError, ValueError):
    """A malformed, truncated or corrupt data file."""


class FetchError(UserError, RuntimeError):
    """No source could deliver a verified file."""
