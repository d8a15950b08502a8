r"""Mean-field ADVI on PyMC's objective with a fused step: the default engine.

``inference.engine=pymc`` runs ``pm.ADVI.fit``, which compiles the whole step
(noise, weights, ELBO, gradients, Adam) into one PyTensor function. On this
2-core CPU most of that step is single-threaded scalar loops over the 1.28 M
variational parameter pairs of the dense net (normal draws, softplus, log q,
Adam) and a scalar ``tanh``. ``inference.engine=fused`` (this module)
keeps everything that defines the fit and splits the step where each part runs
fastest:

1. :math:`\varepsilon \sim \mathcal{N}(0, I)`: Box–Muller on NumPy's SIMD ufuncs;
2. :math:`w = \mu + \mathrm{softplus}(\rho)\,\varepsilon` and the sums of :math:`\log q`: one
   vectorised loop;
3. :math:`\log p(w)` and :math:`\nabla_w \log p(w)`: the PyMC model's own
   ``model.logp()``, compiled by PyTensor (:mod:`bnn.inference.logp_gradient`);
4. the gradient of the negative ELBO in :math:`(\mu, \rho)` and the Adam update:
   one vectorised loop (:func:`bnn.inference.kernels.adam_step`).

What it keeps from ``pm.ADVI``: the approximation object (a real ``pm.MeanField``,
whose ``mu`` and ``rho`` are updated in place), the starting point, the loss
(``(log q(w) - log p(w)) / t``, with PyMC's minibatch normalising constant ``t``),
its single-draw reparameterization gradient, Adam with ``pm.adam``'s arithmetic
and defaults, the step-size schedule and the callbacks. The tests check one step
against PyMC's own objective and ``pm.adam`` on the same noise. What differs is
the noise stream (NumPy's generator, not PyTensor's), so a fit is reproducible
per engine, not across engines.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pymc as pm

from bnn.core.errors import ConfigError
from bnn.core.threads import cores_for_blocks
from bnn.inference.checkpoint import Checkpoint, FitState
from bnn.inference.kernels import adam_step, draw_weights, standard_normal
from bnn.inference.logp_gradient import compile_logp_gradient, runs_in_blocks
from bnn.inference.pymc_engine import MeanFieldFactors, initial_means
from bnn.inference.settings import (
    MAP_SIGMA,
    AdviSettings,
    DivergedError,
    FitResult,
    learning_rate_at,
)
from bnn.inference.step_loop import fit_result, run_steps

# pm.adam's defaults.
BETA1, BETA2, ADAM_EPSILON = 0.9, 0.999, 1e-8
CONFIG_FILE = "conf/inference/advi.yaml"


def check_settings(settings: AdviSettings, engine: str = "fused") -> None:
    """Raise :class:`ConfigError` unless ``engine`` (fused or jax) implements these settings."""
    if settings.optimizer != "adam":
        raise ConfigError(
            f"inference.engine={engine} implements Adam only, got optimizer="
            f"{settings.optimizer!r}. Use inference.optimizer=adam, or inference.engine=pymc "
            f"for PyMC's optimizers ({CONFIG_FILE})"
        )
    if settings.method not in ("advi", "map"):
        raise ConfigError(
            f"inference.engine={engine} fits method advi or map, got {settings.method!r} "
            f"({CONFIG_FILE})"
        )


def diverged_error(index: int, loss: float, variable: str) -> DivergedError:
    """The error of a fit whose loss at step ``index`` (0-based) is not finite."""
    return DivergedError(
        f"ADVI diverged: the approximation of RV `{variable}` gave a loss of {loss} at step "
        f"{index + 1}. Lower inference.learning_rate or inference.start_sigma, or set "
        "inference.float_dtype=float64."
    )


def first_non_finite(ordering: dict, weights: np.ndarray, gradient: np.ndarray) -> str:
    """The first variable whose ``weights`` or ``gradient`` are not finite (else the first one)."""
    for name, where, _, _ in ordering.values():
        if not (np.isfinite(weights[where]).all() and np.isfinite(gradient[where]).all()):
            return name
    return next(iter(ordering))


def starting_approximation(model: pm.Model, settings: AdviSettings, seed: int) -> pm.MeanField:
    """The ``pm.MeanField`` a fit starts from: seeded initial means, one starting sd.

    ``seed`` draws the means as :func:`bnn.inference.pymc_engine.fit_advi` does; a MAP fit
    (``settings.method="map"``) starts, and stays, at the sd ``MAP_SIGMA``.
    """
    start = initial_means(
        model, settings.init_means, settings.init_scale, np.random.default_rng(seed)
    )
    start_sigma = MAP_SIGMA if settings.method == "map" else settings.start_sigma
    with model:
        return pm.MeanField(
            start=start,
            start_sigma={name: np.full(value.size, start_sigma) for name, value in start.items()},
            random_seed=seed,
        )


def fit_fused(
    model: pm.Model,
    settings: AdviSettings,
    seed: int,
    progressbar: bool = True,
    callbacks: Sequence[Callable] = (),
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Fit mean-field ADVI (or MAP, ``settings.method="map"``) to ``model``; see the module.

    ``seed`` sets the initial means (as :func:`bnn.inference.pymc_engine.fit_advi` does), the
    minibatches and the noise. ``callbacks`` are called as ``pm.fit`` calls them,
    ``callback(factors, losses, steps_done)``, with the factors being fitted.
    ``checkpoint`` resumes a stopped fit and saves this one as it goes.
    """
    check_settings(settings)
    began = time.perf_counter()
    approx = starting_approximation(model, settings, seed)
    group = approx.groups[0]
    # borrow=True: the shared variables' own arrays, so in-place updates are the fit.
    mu = group.params_dict["mu"].get_value(borrow=True)
    rho = group.params_dict["rho"].get_value(borrow=True)
    dtype = mu.dtype
    logp_gradient = compile_logp_gradient(model, group.ordering, str(dtype), seed)
    scale = dtype.type(1 / float(approx.symbolic_normalizing_constant.eval()))
    step = FusedStep(mu, rho, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))))

    def one_step(index: int) -> float:
        return step(
            index, logp_gradient, scale, learning_rate_at(index, settings), settings.method != "map"
        )

    def diverged(index: int, loss: float) -> DivergedError:
        return diverged_error(
            index, loss, first_non_finite(group.ordering, step.weights, step.gradient)
        )

    factors = MeanFieldFactors(approx)
    # A conv net's step is blocks of images on every core, BLAS one thread each.
    cores = cores_for_blocks() if runs_in_blocks(logp_gradient) else contextlib.nullcontext()
    with cores:
        losses = run_steps(
            settings.n_iter,
            one_step,
            factors,
            callbacks,
            progressbar,
            "Fitting",
            diverged,
            checkpoint,
            step.state(logp_gradient),
            began,
        )
    return fit_result(factors, losses, began, checkpoint)


class FusedStep:
    """The buffers of one step, allocated once, and the step itself.

    Parameters
    ----------
    mu, rho : ndarray
        The flat variational parameters, updated in place.
    rng : numpy.random.Generator
        The noise stream.
    """

    def __init__(self, mu: np.ndarray, rho: np.ndarray, rng: np.random.Generator) -> None:
        self.mu, self.rho, self.rng = mu, rho, rng
        size, dtype = mu.size, mu.dtype
        self.noise, self.weights = np.empty(size, dtype), np.empty(size, dtype)
        self.sigma, self.slope = np.empty(size, dtype), np.empty(size, dtype)
        self.scratch = np.empty(size + 1, dtype)
        self.adam_mu, self.adam_rho = np.zeros((2, size), dtype), np.zeros((2, size), dtype)
        self.gradient = np.zeros(size, dtype)
        self.log_2pi = 0.5 * size * math.log(2 * math.pi)

    def __call__(
        self, index: int, logp_gradient, scale, learning_rate: float, update_rho: bool
    ) -> float:
        """Step ``index`` (0-based): draw, evaluate, update; return the loss before the update.

        A non-finite loss leaves the parameters as they were.
        """
        standard_normal(self.rng, self.noise, self.scratch)
        log_sigma_sum, noise_sum = draw_weights(
            self.mu, self.rho, self.noise, self.weights, self.sigma, self.slope
        )
        logp, self.gradient = logp_gradient(self.weights)
        log_q = -0.5 * noise_sum - log_sigma_sum
        loss = (log_q - self.log_2pi - float(logp)) * float(scale)
        if not math.isfinite(loss):
            return loss
        steps = index + 1
        step_size = learning_rate * math.sqrt(1 - BETA2**steps) / (1 - BETA1**steps)
        dtype = self.mu.dtype.type
        adam_step(
            self.mu,
            self.rho,
            self.adam_mu,
            self.adam_rho,
            self.noise,
            self.sigma,
            self.slope,
            self.gradient,
            scale,
            dtype(step_size),
            dtype(BETA1),
            dtype(BETA2),
            dtype(ADAM_EPSILON),
            update_rho,
        )
        return loss

    def state(self, logp_gradient) -> FitState:
        """What a step changes: the parameters, Adam's moments, the noise and minibatch streams."""
        state = FitState()
        for name in ("mu", "rho", "adam_mu", "adam_rho"):
            state.add_array(name, getattr(self, name))
        state.add_generator("noise", self.rng)
        state.add_updated_shared("minibatch", logp_gradient)
        return state
