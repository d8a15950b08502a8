"""Progress bars for the long steps (fits, predictives), all drawn the same way by rich."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def progress_bar(
    label: str | None, total: int, transient: bool = False
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a bar labelled ``label`` is drawn unless ``label`` is None.

    A ``transient`` bar is removed when it completes, so a run of many short
    steps (one per rotation angle) leaves no line behind.
    """
    if label is None:
        yield lambda _n=1: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=transient) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n=1: progress.advance(task, n)
