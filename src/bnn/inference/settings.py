"""What a fit is told and what it returns: settings, schedule, result, ELBO curve.

The objective is PyMC's ELBO with KL weight 1 throughout; only the optimizer's
step size is scheduled. No PyMC here: the settings are read where PyMC is not
imported (config validation, the benchmark's plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bnn.core.errors import UserError

OPTIMIZER_NAMES = ("adam", "adamax", "adagrad", "adagrad_window", "rmsprop", "momentum", "sgd")
LR_DECAYS = ("none", "cosine")
METHODS = ("advi", "map", "lrt")
# How a step of advi/map is run: fused (bnn.inference.fused), pm.ADVI's own step, or the
# whole step under JAX (bnn.inference.jax_engine; CPU or GPU).
ENGINES = ("fused", "pymc", "jax")
# inference=map: the factors' sd, frozen. The draws are then the means to ~1e-6,
# and the ADVI objective's gradient in the means is the gradient of log p(means).
MAP_SIGMA = 1e-6
INIT_SCHEMES = ("glorot", "normal")


class DivergedError(UserError, FloatingPointError):
    """The fit produced NaN; the settings, not the code, need changing."""


@dataclass(frozen=True)
class AdviSettings:
    """Everything :func:`fit_advi` needs; see ``conf/inference/advi.yaml`` for meanings.

    ``method="map"`` (``conf/inference/map.yaml``) fits the same model to a point.
    """

    method: str = "advi"
    engine: str = "fused"
    n_iter: int = 6000
    batch_size: int = 500
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    lr_decay: str = "cosine"
    lr_final_fraction: float = 0.1
    float_dtype: str = "float32"
    init_means: str = "glorot"
    init_scale: float = 1.0
    start_sigma: float = 1e-3
    elbo_log_points: int = 1000
    validate_every: int = 250


class Factors(Protocol):
    """The mean-field factors while an engine fits them: what fit callbacks are given.

    Callbacks are called ``callback(factors, losses_so_far, steps_done)`` after
    every step, by every engine, as ``pm.fit`` calls its callbacks.
    """

    def means(self) -> dict[str, np.ndarray]:
        """Current means, keyed by PyMC's value-variable names."""

    def stds(self) -> dict[str, np.ndarray]:
        """Current standard deviations, keyed as :meth:`means`."""


@dataclass
class FitResult:
    """What every engine (pymc, fused, lrt; map on pymc and fused) returns.

    ``means`` and ``stds`` are the fitted Gaussian factors per free variable, in
    PyMC's unconstrained space; :class:`bnn.predictive.posterior.Posterior` holds them.
    """

    means: dict[str, np.ndarray]
    stds: dict[str, np.ndarray]
    loss_history: np.ndarray  # negative ELBO estimate at every iteration
    seconds: float  # wall time of the fit, compilation included
    began: float = 0.0  # time.perf_counter() when the fit started

    @property
    def elbo_history(self) -> np.ndarray:
        return -self.loss_history


def learning_rate_at(step: int, settings: AdviSettings) -> float:
    """The scheduled step size: constant, or cosine-annealed to ``lr_final_fraction``."""
    if settings.lr_decay == "none":
        return settings.learning_rate
    progress = min(step / max(settings.n_iter - 1, 1), 1.0)
    floor = settings.lr_final_fraction
    return settings.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def elbo_curve(elbo_history: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Average the per-iteration ELBO over windows, for plotting and logging.

    Returns the 1-based last step of each window and the window's mean ELBO;
    single-sample ELBO estimates are noisy, and 50,000 points help no plot.
    """
    n_iter = len(elbo_history)
    window = max(1, math.ceil(n_iter / n_points))
    n_windows = math.ceil(n_iter / window)
    padded = np.full(n_windows * window, np.nan)
    padded[:n_iter] = elbo_history
    means = np.nanmean(padded.reshape(n_windows, window), axis=1)
    steps = np.minimum(np.arange(1, n_windows + 1) * window, n_iter)
    return steps, means
