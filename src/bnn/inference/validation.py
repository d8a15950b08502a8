"""Validation accuracy during the fit, and the wall time until it reaches a target.

:class:`ValidationMonitor` is a fit callback (every engine calls it). Every ``every`` steps it
evaluates the network at the current posterior mean on the validation set
(a NumPy forward pass, no compilation). Its own time is kept off the clock:
:meth:`ValidationMonitor.curve` gives the seconds an unmonitored fit would
have taken to each check, and ``own_seconds`` is what to take off the fit's time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from bnn.data.dataset import LabelledImages
from bnn.evaluation.metrics import accuracy
from bnn.inference.settings import Factors
from bnn.predictive.forward import class_probabilities
from bnn.predictive.posterior import Posterior

TARGETS = (0.97, 0.98, 0.99)


@dataclass
class ValidationMonitor:
    """Posterior-mean validation accuracy every ``every`` steps."""

    data: LabelledImages
    spec: object
    every: int
    own_seconds: float = 0.0
    # (step, perf_counter at the check less own_seconds so far, accuracy)
    _checks: list[tuple[int, float, float]] = field(default_factory=list)

    def __call__(self, factors: Factors, _losses, step: int) -> None:
        done = step  # engines pass the number of steps done, 1 after the first
        if done % self.every:
            return
        paused = time.perf_counter()
        point = Posterior(means=factors.means(), stds={}).point()
        probabilities = class_probabilities(self.data.images, self.spec, point)[0]
        score = accuracy(probabilities.argmax(axis=1), np.asarray(self.data.labels))
        self._checks.append((done, paused - self.own_seconds, score))
        self.own_seconds += time.perf_counter() - paused

    def checkpoint_state(self, began: float) -> dict:
        """The checks so far, timed from ``began``, and the monitor's own time (JSON)."""
        return {"checks": self.curve(began), "own_seconds": self.own_seconds}

    def restore_checkpoint(self, state: dict, began: float) -> None:
        """Take back :meth:`checkpoint_state`, for a fit that (re)started at ``began``."""
        self._checks = [(step, began + seconds, score) for step, seconds, score in state["checks"]]
        self.own_seconds = state["own_seconds"]

    def curve(self, began: float) -> list[tuple[int, float, float]]:
        """``(step, fit seconds, accuracy)`` per check, timed from ``began`` (the fit's start)."""
        return [(step, clock - began, score) for step, clock, score in self._checks]


def seconds_to_reach(rows, target: float) -> float | None:
    """Fit seconds at the first check whose accuracy is at least ``target``, else ``None``."""
    return next((seconds for _, seconds, score in rows if score >= target), None)


def time_to_accuracy(rows) -> dict[str, float]:
    """``fit_seconds_to_97`` etc. for each target in :data:`TARGETS` that was reached."""
    found = {f"fit_seconds_to_{round(100 * t)}": seconds_to_reach(rows, t) for t in TARGETS}
    return {key: value for key, value in found.items() if value is not None}
