"""The one place where expected user errors become a one-line message and exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from bnn.core.errors import UserError
from bnn.core.signals import Interrupted, interrupts_raise

EXIT_USER_ERROR = 2


def user_errors_exit(
    func: Callable | None = None, *, on_failure: Callable[[], str | None] | None = None
) -> Callable:
    """Run ``func``; turn a :class:`UserError` into ``error: ...`` on stderr and exit 2.

    A SIGINT or SIGTERM (:class:`~bnn.core.signals.Interrupted`) becomes one
    ``interrupted: ...`` line and exit status 128 + the signal (130, 143). Bugs
    still raise with a full traceback: only errors the user can fix are shortened.
    ``on_failure`` runs after either (e.g. to undo a ``dvc exp run -S`` edit); a
    line it returns is printed too. Use as ``@user_errors_exit`` or
    ``@user_errors_exit(on_failure=...)``.
    """
    if func is None:
        return functools.partial(user_errors_exit, on_failure=on_failure)

    def fail(line: str, code: int):
        print(line, file=sys.stderr)
        note = on_failure() if on_failure is not None else None
        if note:
            print(f"note: {note}", file=sys.stderr)
        sys.exit(code)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with interrupts_raise():
                return func(*args, **kwargs)
        except UserError as error:
            fail(f"error: {error}", EXIT_USER_ERROR)
        except Interrupted as interrupted:
            fail(f"interrupted: {interrupted}", interrupted.exit_code)

    return wrapper
