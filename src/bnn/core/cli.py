"""The one place where expected user errors become a one-line message and exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from bnn.core.errors import UserError

EXIT_USER_ERROR = 2


def user_errors_exit(func: Callable) -> Callable:
    """Run ``func``; turn a :class:`UserError` into ``error: ...`` on stderr and exit 2.

    Bugs still raise with a full traceback: only errors the user can fix are
    shortened.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
