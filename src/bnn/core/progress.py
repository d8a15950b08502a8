"""Progress bars for the long steps (fits, predictives), all drawn the same way by rich."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def progress_bar(
    label: str | None,
    total: int,
    transient: bool = False,
    stderr: bool = False,
    on_estimate: Callable[[float], None] | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a bar labelled ``label`` is drawn unless ``label`` is None.

    Parameters
    ----------
    label : str or None
        The bar's label; None draws no bar.
    total : int
        Steps to completion.
    transient : bool
        Remove the bar when it completes, so that a run of many short steps
        (one per rotation angle) leaves no line behind. The default is False.
    stderr : bool
        Draw on stderr, for a command whose stdout is its output (``predict``
        writes CSV there), and only when stderr is a terminal. The default,
        False, draws on stdout.
    on_estimate : callable or None
        Called once, after the first step, with the estimated seconds for all
        ``total`` steps (the first step's time times ``total``), even without
        a bar. The default, None, estimates nothing.
    """
    began = time.perf_counter()
    done = 0

    def estimate(n: int) -> None:
        nonlocal done
        first, done = done == 0, done + n
        if first and on_estimate is not None:
            on_estimate((time.perf_counter() - began) * total / done)

    console = Console(stderr=True) if stderr else None
    if label is None or (console is not None and not console.is_terminal):
        # On stderr the bar is for a person: none when it goes to a file or a pipe.
        yield estimate
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=transient, console=console) as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            estimate(n)

        yield advance


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1.4 h``: a duration as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
