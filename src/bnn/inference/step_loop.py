"""The loop around an optimizer step, shared by every engine.

It keeps the per-step loss, shows PyMC's kind of progress bar, stops at the first
non-finite loss, and calls fit callbacks exactly as ``pm.fit`` does:
``callback(factors, losses_so_far, steps_done)``. With a
:class:`~bnn.inference.checkpoint.Checkpoint` it starts from the saved step, saves
as often as configured, and on SIGINT or SIGTERM finishes the step, saves and
raises :class:`~bnn.core.signals.Interrupted`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
from rich.progress import Progress, TextColumn

from bnn.core.signals import Interrupted, deferred_interrupts
from bnn.inference.checkpoint import Checkpoint, FitState
from bnn.inference.settings import FitResult


def run_steps(
    n_iter: int,
    step: Callable[[int], float],
    factors,
    callbacks: Sequence[Callable] = (),
    progressbar: bool = False,
    label: str = "Fitting",
    diverged: Callable[[int, float], Exception] | None = None,
    checkpoint: Checkpoint | None = None,
    state: FitState | None = None,
    began: float = 0.0,
) -> np.ndarray:
    """Call ``step(index)`` for ``index`` in ``range(n_iter)``; return the losses it gave.

    ``diverged(index, loss)`` builds the exception raised when a loss is not finite
    (the default is ``FloatingPointError``); no later step runs. ``checkpoint``
    saves and restores ``state`` (everything ``step`` changes); ``began`` is the
    fit's start, for the fit seconds a checkpoint keeps.
    """
    losses = np.full(n_iter, np.nan)
    first = 0
    if checkpoint is not None:
        first = checkpoint.restore(state, losses, callbacks, began)
    with (
        deferred_interrupts() as pending,
        Progress(
            *Progress.get_default_columns(),
            TextColumn("{task.fields[loss]}"),
            disable=not progressbar,
        ) as progress,
    ):
        task = progress.add_task(f"{label}:", total=n_iter, completed=first, loss="")
        for index in range(first, n_iter):
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
            signum = pending()
            if checkpoint is not None and (signum is not None or checkpoint.due(index + 1)):
                checkpoint.save(state, losses, index + 1, callbacks, began)
            if signum is not None:
                raise Interrupted(signum, f"the fit stopped at step {index + 1:,} of {n_iter:,}")
        if checkpoint is not None and first < n_iter:
            # The finished state: a stage stopped after the fit resumes with no steps left.
            checkpoint.save(state, losses, n_iter, callbacks, began)
    return losses


def fit_result(factors, losses: np.ndarray, began: float, checkpoint: Checkpoint | None):
    """The engines' one :class:`FitResult`, timed from ``began`` plus the fit's earlier runs."""
    began -= checkpoint.elapsed_before if checkpoint is not None else 0.0
    return FitResult(
        means=factors.means(),
        stds=factors.stds(),
        loss_history=losses,
        seconds=time.perf_counter() - began,
        began=began,
    )
