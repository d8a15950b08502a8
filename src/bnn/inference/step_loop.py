"""The loop around an optimizer step, shared by the fits PyMC does not drive itself.

It keeps the per-step loss, shows PyMC's kind of progress bar, stops at the first
non-finite loss, and calls fit callbacks exactly as ``pm.fit`` does:
``callback(factors, losses_so_far, steps_done)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from rich.progress import Progress, TextColumn


def run_steps(
    n_iter: int,
    step: Callable[[int], float],
    factors,
    callbacks: Sequence[Callable] = (),
    progressbar: bool = False,
    label: str = "Fitting",
    diverged: Callable[[int, float], Exception] | None = None,
) -> np.ndarray:
    """Call ``step(index)`` for ``index`` in ``range(n_iter)``; return the losses it gave.

    ``diverged(index, loss)`` builds the exception raised when a loss is not finite
    (the default is ``FloatingPointError``); no later step runs.
    """
    losses = np.full(n_iter, np.nan)
    with Progress(
        *Progress.get_default_columns(),
        TextColumn("{task.fields[loss]}"),
        disable=not progressbar,
    ) as progress:
        task = progress.add_task(f"{label}:", total=n_iter, loss="")
        for index in range(n_iter):
            loss = float(step(index))
            if not math.isfinite(loss):
                if diverged is None:
                    raise FloatingPointError(f"the loss is {loss} at step {index + 1}")
                raise diverged(index, loss)
            losses[index] = loss
            if index % 10 == 0:
                mean_loss = losses[max(0, index - 999) : index + 1].mean()
                progress.update(task, loss=f"Average Loss = {mean_loss:,.5g}")
            progress.update(task, advance=1)
            for callback in callbacks:
                callback(factors, losses[: index + 1], index + 1)
    return losses
