"""The ``pymc`` engine: PyMC's own ``pm.ADVI`` step, for advi and map.

The starting point is set deliberately (see :func:`initial_means` and
``start_sigma``): PyMC's default start, sd = softplus(0) = 0.69 on every
weight, leaves an 800-wide net at chance for thousands of iterations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pymc as pm
import pytensor
from pymc.pytensorf import resolve_backend_compile_kwargs

from bnn.inference.checkpoint import Checkpoint, FitState
from bnn.inference.settings import (
    MAP_SIGMA,
    AdviSettings,
    DivergedError,
    FitResult,
    learning_rate_at,
)
from bnn.inference.step_loop import fit_result, run_steps

OPTIMIZERS = {
    "adam": pm.adam,
    "adamax": pm.adamax,
    "adagrad": pm.adagrad,
    "adagrad_window": pm.adagrad_window,
    "rmsprop": pm.rmsprop,
    "momentum": pm.momentum,
    "sgd": pm.sgd,
}


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


class MeanFieldFactors:
    """The :class:`~bnn.inference.settings.Factors` of a ``pm.MeanField``, per variable."""

    def __init__(self, approx: pm.MeanField) -> None:
        self.approx = approx
        self._group = approx.groups[0]

    def _split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: flat[where].reshape(shape)
            for name, where, shape, _ in self._group.ordering.values()
        }

    def means(self) -> dict[str, np.ndarray]:
        return self._split(self._group.params_dict["mu"].get_value())

    def stds(self) -> dict[str, np.ndarray]:
        return self._split(self._group.std.eval())


def fit_advi(
    model: pm.Model,
    settings: AdviSettings,
    seed: int,
    progressbar: bool = True,
    callbacks: Sequence[Callable] = (),
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Fit mean-field ADVI to ``model`` with PyMC's own step (``inference.engine=pymc``).

    The step is the function ``pm.ADVI.fit`` compiles (PyMC's objective, optimizer
    and noise), called from this project's step loop
    (:func:`bnn.inference.step_loop.run_steps`) as ``pm.ADVI.fit`` calls it, so
    that the fit can be checkpointed, resumed and stopped between steps.
    :func:`bnn.inference.fitting.fit_model` picks this or the fused step
    (:mod:`bnn.inference.fused`) by ``settings.engine``.

    ``callbacks`` are called ``callback(factors, losses, step)`` after every step
    (:class:`~bnn.inference.settings.Factors`; e.g. the validation monitor).
    """
    rng = np.random.default_rng(seed)
    start = initial_means(model, settings.init_means, settings.init_scale, rng)
    sigma = MAP_SIGMA if settings.method == "map" else settings.start_sigma
    start_sigma = {name: np.full(value.size, sigma) for name, value in start.items()}
    learning_rate = pytensor.shared(
        np.asarray(settings.learning_rate, dtype=pytensor.config.floatX), name="learning_rate"
    )
    optimizer = OPTIMIZERS[settings.optimizer](learning_rate=learning_rate)
    if settings.method == "map":
        optimizer = means_only(optimizer)

    with model:
        advi = pm.ADVI(random_seed=seed, start=start, start_sigma=start_sigma)
        began = time.perf_counter()
        step_function = advi.objective.step_function(
            score=True,
            obj_optimizer=optimizer,
            compile_kwargs=resolve_backend_compile_kwargs(None, None),
        )
    factors = MeanFieldFactors(advi.approx)
    state = FitState()
    state.add_updated_shared("step", step_function)

    def step(index: int) -> float:
        # pm.ADVI.fit's schedule: step k (0-based) runs at the rate set for it.
        learning_rate.set_value(np.asarray(learning_rate_at(index, settings), learning_rate.dtype))
        return step_function()

    def diverged(index: int, loss: float) -> DivergedError:
        means = factors.means()
        name = next((n for n, m in means.items() if not np.isfinite(m).all()), next(iter(means)))
        return DivergedError(
            f"ADVI diverged: the approximation of RV `{name}` gave a loss of {loss} at step "
            f"{index + 1}. Lower inference.learning_rate or inference.start_sigma, or set "
            "inference.float_dtype=float64."
        )

    losses = run_steps(
        settings.n_iter,
        step,
        factors,
        callbacks,
        progressbar,
        "Fitting",
        diverged,
        checkpoint,
        state,
        began,
    )
    return fit_result(factors, losses, began, checkpoint)


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
