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


class DiskFullError(UserError, OSError):
    """A write failed because the disk (or the file-size limit) is full; the old file was kept.

    An ``OSError`` too, so code that handles failed writes still catches it.
    Raised as ``DiskFullError(errno, message)``; it reads as ``message`` alone.
    """

    def __str__(self) -> str:
        return self.strerror or super().__str__()
