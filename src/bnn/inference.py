"""Fitting the mean-field approximation by minibatch ADVI, or a point estimate (MAP).

The objective is PyMC's ELBO with KL weight 1 throughout; only the optimizer's
step size is scheduled. The starting point is set deliberately (see
:func:`initial_means` and ``start_sigma``): PyMC's default start,
sd = softplus(0) = 0.69 on every weight, leaves an 800-wide net at chance
for thousands of iterations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor

from bnn.errors import UserError

OPTIMIZERS = {
    "adam": pm.adam,
    "adamax": pm.adamax,
    "adagrad": pm.adagrad,
    "adagrad_window": pm.adagrad_window,
    "rmsprop": pm.rmsprop,
    "momentum": pm.momentum,
    "sgd": pm.sgd,
}
LR_DECAYS = ("none", "cosine")
METHODS = ("advi", "map", "lrt")
# How a step of advi/map is run: fused (bnn.fused_advi) or pm.ADVI's own step.
ENGINES = ("fused", "pymc")
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


@dataclass
class FitResult:
    """A fitted approximation and how the fit went."""

    approx: pm.MeanField
    loss_history: np.ndarray  # negative ELBO estimate at every iteration
    seconds: float  # wall time of the fit, compilation included
    began: float = 0.0  # time.perf_counter() when the fit started

    @property
    def elbo_history(self) -> np.ndarray:
        return -self.loss_history


def initial_means(model: pm.Model, scheme: str, scale: float, rng: np.random.Generator) -> dict:
    """Initial posterior means for every free variable, keyed by value-variable name.

    ``glorot`` draws each weight matrix from N(0, 1/fan_in), where fan_in is
    the product of all but the last axis, so tanh units start unsaturated;
    ``normal`` draws N(0, scale), the 2016 experiment's choice. Biases (1-D)
    start at zero. Variables with a transform (such as hyperprior scales) keep
    PyMC's initial point.
    """
    start = model.initial_point()
    dtype = pytensor.config.floatX
    for rv in model.free_RVs:
        value_name = model.rvs_to_values[rv].name
        if model.rvs_to_transforms.get(rv) is not None:
            continue
        shape = start[value_name].shape
        if len(shape) < 2:
            start[value_name] = np.zeros(shape, dtype)
            continue
        std = scale if scheme == "normal" else 1.0 / math.sqrt(math.prod(shape[:-1]))
        start[value_name] = (rng.standard_normal(shape) * std).astype(dtype)
    return start


def learning_rate_at(step: int, settings: AdviSettings) -> float:
    """The scheduled step size: constant, or cosine-annealed to ``lr_final_fraction``."""
    if settings.lr_decay == "none":
        return settings.learning_rate
    progress = min(step / max(settings.n_iter - 1, 1), 1.0)
    floor = settings.lr_final_fraction
    return settings.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def fit_advi(
    model: pm.Model,
    settings: AdviSettings,
    seed: int,
    progressbar: bool = True,
    callbacks: Sequence[Callable] = (),
) -> FitResult:
    """Fit mean-field ADVI to ``model`` with PyMC's own step (``inference.engine=pymc``).

    Returns the approximation and the ELBO history. :func:`bnn.fitting.fit_model`
    picks this or the fused step (:mod:`bnn.fused_advi`) by ``settings.engine``.

    ``callbacks`` are PyMC fit callbacks, ``callback(approx, losses, step)``,
    called after every step (for monitoring, e.g. validation accuracy).
    """
    rng = np.random.default_rng(seed)
    start = initial_means(model, settings.init_means, settings.init_scale, rng)
    sigma = MAP_SIGMA if settings.method == "map" else settings.start_sigma
    start_sigma = {name: np.full(value.size, sigma) for name, value in start.items()}
    learning_rate = pytensor.shared(
        np.asarray(settings.learning_rate, dtype=pytensor.config.floatX), name="learning_rate"
    )

    def schedule(_approx, _losses, step):
        learning_rate.set_value(np.asarray(learning_rate_at(step, settings), learning_rate.dtype))

    optimizer = OPTIMIZERS[settings.optimizer](learning_rate=learning_rate)
    if settings.method == "map":
        optimizer = means_only(optimizer)

    with model:
        advi = pm.ADVI(random_seed=seed, start=start, start_sigma=start_sigma)
        began = time.perf_counter()
        try:
            approx = advi.fit(
                settings.n_iter,
                obj_optimizer=optimizer,
                callbacks=[schedule, *callbacks],
                progressbar=progressbar,
            )
        except FloatingPointError as error:
            # PyMC lists every NaN entry; the first one names the variable.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            where = next((line for line in lines if "approximation of RV" in line), lines[0])
            raise DivergedError(
                f"ADVI diverged: {where} Lower inference.learning_rate or "
                "inference.start_sigma, or set inference.float_dtype=float64."
            ) from None
        seconds = time.perf_counter() - began
    return FitResult(
        approx=approx, loss_history=np.asarray(approx.hist), seconds=seconds, began=began
    )


def means_only(optimizer: Callable) -> Callable:
    """An optimizer that updates the approximation's means and leaves its sds where they are.

    With every sd frozen near zero, :data:`MAP_SIGMA`, minibatch ADVI becomes
    minibatch MAP: the objective's gradient in the means is the gradient of the
    model's log density (in PyMC's unconstrained space), and the entropy term
    is a constant.
    """

    def update(grads, params):
        kept = [
            (grad, param) for grad, param in zip(grads, params, strict=True) if param.name == "mu"
        ]
        if len(kept) != 1:
            raise RuntimeError(f"expected one 'mu' among the approximation's {params}")
        return optimizer([kept[0][0]], [kept[0][1]])

    return update


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
