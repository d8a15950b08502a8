"""SIGINT and SIGTERM as one exception, raised where stopping is safe.

A Ctrl-C or a ``kill`` becomes :class:`Interrupted`, which the stage scripts turn
into one line and exit status ``128 + signal`` (130 for SIGINT, 143 for SIGTERM),
as a shell reports a process killed by that signal. Inside
:func:`deferred_interrupts` (a fit's step loop) the signal is only recorded: the
loop finishes its step, saves a checkpoint and raises there, so no signal lands
in the middle of compiled code (where PyTensor's numba backend would turn
``KeyboardInterrupt`` into a ``SystemError``) or of a half-updated parameter array.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT or SIGTERM asked the process to stop.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that ``except Exception``
    clauses do not swallow it.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        self.signum = signum
        self.detail = detail
        super().__init__(f"{signal.Signals(signum).name}{': ' + detail if detail else ''}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    deferring = False
    pending: int | None = None


def _handle(signum: int, _frame) -> None:
    if _State.deferring:
        _State.pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Callable[[], int | None]]:
    """Record SIGINT and SIGTERM instead of raising; yield a function returning the signal.

    The caller polls it at points where stopping is safe and raises
    :class:`Interrupted` itself. Outside any :func:`interrupts_raise` block the
    handlers are installed for the duration of this one.
    """
    with interrupts_raise():
        outer, _State.deferring, _State.pending = _State.deferring, True, None
        try:
            yield lambda: _State.pending
        finally:
            _State.deferring = outer
            signum, _State.pending = _State.pending, None
    if signum is not None and not outer:
        # A signal that came after the last poll is not lost.
        raise Interrupted(signum)
