r"""Mean-field ADVI with the whole step as one JAX program: the same fit on a CPU or a GPU.

``inference.engine=jax``. The fused engine (:mod:`bnn.inference.fused`) splits a
step between NumPy, Numba and a PyTensor C function, all on the host. Here one
``jax.jit``-compiled function does all of it, on whatever device JAX runs on
(a GPU where ``jax[cuda]`` finds one, the CPU everywhere else):

1. the minibatch: rows drawn with replacement, as ``pm.Minibatch`` draws them;
2. :math:`\varepsilon \sim \mathcal{N}(0, I)` and
   :math:`w = \mu + \mathrm{softplus}(\rho)\,\varepsilon`;
3. :math:`\log p(w)` and :math:`\nabla_w \log p(w)`: the PyMC model's own
   ``model.logp()``, compiled by PyTensor's JAX backend
   (:mod:`bnn.inference.jax_logp`);
4. the loss and the Adam update, with the fused engine's arithmetic
   (:func:`bnn.inference.kernels.adam_step`).

The parameters and Adam's moments stay on the device between steps; only the
loss comes back each step, and the means when a callback or a checkpoint asks
for them. What the fit keeps from ``pm.ADVI`` is what the fused engine keeps: a
real ``pm.MeanField`` (written back when the fit ends), its starting point, the
loss, Adam with ``pm.adam``'s defaults, the schedule and the callbacks. The noise
and the minibatch rows come from JAX's generator, so a fit is reproducible per
engine (and per device), not across engines.

JAX is not in ``make env``: ``make bench-env`` installs the pinned CPU build;
for a GPU install ``jax[cuda12]`` at the same version.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import pymc as pm

from bnn.core.errors import ConfigError
from bnn.inference.checkpoint import Checkpoint, FitState
from bnn.inference.fused import (
    ADAM_EPSILON,
    BETA1,
    BETA2,
    check_settings,
    diverged_error,
    first_non_finite,
    starting_approximation,
)
from bnn.inference.jax_logp import BatchLogpGradient, batch_logp_gradient
from bnn.inference.pymc_engine import MeanFieldFactors
from bnn.inference.settings import AdviSettings, FitResult, learning_rate_at
from bnn.inference.step_loop import fit_result, run_steps

STATE = ("mu", "rho", "adam_mu", "adam_rho", "key")


def import_jax():
    """The ``jax`` module, with 64-bit scalars on; :class:`ConfigError` if it is not installed."""
    try:
        import jax
        import pytensor.link.jax.dispatch  # noqa: F401  (sets jax_enable_x64 by floatX)
    except ImportError as error:
        raise ConfigError(
            "inference.engine=jax needs JAX, which `make env` does not install: run "
            "`make bench-env` for the pinned CPU build (requirements-bench.lock), or install "
            "jax[cuda12] at that version for a GPU; or use inference.engine=fused"
        ) from error
    # float64 for the loss's sums, as the fused engine keeps them; arrays keep their dtype.
    jax.config.update("jax_enable_x64", True)
    return jax


def fit_jax(
    model: pm.Model,
    settings: AdviSettings,
    seed: int,
    progressbar: bool = True,
    callbacks: Sequence[Callable] = (),
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Fit mean-field ADVI (or MAP) to ``model`` with the step in JAX; see the module.

    The arguments are :func:`bnn.inference.fused.fit_fused`'s: ``seed`` sets the
    initial means, the minibatches and the noise.
    """
    check_settings(settings, engine="jax")
    import_jax()
    began = time.perf_counter()
    approx = starting_approximation(model, settings, seed)
    group = approx.groups[0]
    mu = group.params_dict["mu"].get_value(borrow=True)
    rho = group.params_dict["rho"].get_value(borrow=True)
    target = batch_logp_gradient(model, group.ordering, str(mu.dtype))
    scale = 1 / float(approx.symbolic_normalizing_constant.eval())
    step = JaxStep(mu, rho, target, scale, settings.method != "map", seed)

    def diverged(index: int, loss: float):
        weights, gradient = step.last_weights_and_gradient()
        return diverged_error(index, loss, first_non_finite(group.ordering, weights, gradient))

    factors = DeviceFactors(approx, step)
    losses = run_steps(
        settings.n_iter,
        lambda index: step(learning_rate_at(index, settings), index),
        factors,
        callbacks,
        progressbar,
        "Fitting",
        diverged,
        checkpoint,
        step.fit_state(),
        began,
    )
    return fit_result(factors, losses, began, checkpoint)


class JaxStep:
    """The fit's state on the JAX device, and the compiled step that advances it.

    Parameters
    ----------
    mu, rho : ndarray
        The approximation's flat parameters (host arrays): the start, and where
        :meth:`copy_to_host` writes the current values.
    target : BatchLogpGradient
        The model's log density and gradient, minibatch as input.
    scale : float
        ``1 / t``, PyMC's minibatch normalising constant.
    update_rho : bool
        False for MAP: ``rho`` and its moments stay put.
    seed : int
        Seeds the noise and minibatch stream.
    """

    def __init__(
        self,
        mu: np.ndarray,
        rho: np.ndarray,
        target: BatchLogpGradient,
        scale: float,
        update_rho: bool,
        seed: int,
    ) -> None:
        jax = import_jax()
        jnp = jax.numpy
        self.mu_host, self.rho_host = mu, rho
        stream = int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])
        zeros = np.zeros((2, mu.size), mu.dtype)
        self.state = {
            "mu": jnp.asarray(mu),
            "rho": jnp.asarray(rho),
            "adam_mu": jnp.asarray(zeros),
            "adam_rho": jnp.asarray(zeros),
            "key": jax.random.PRNGKey(stream),
        }
        self.data = tuple(jnp.asarray(array) for array in target.data)
        self.last = None
        self._step = jax.jit(
            partial(
                advance,
                target=target,
                scale=mu.dtype.type(scale),
                update_rho=update_rho,
                log_2pi=0.5 * mu.size * math.log(2 * math.pi),
            ),
            donate_argnums=0,
        )

    def __call__(self, learning_rate: float, index: int) -> float:
        """Step ``index`` (0-based); return the loss before the update.

        A non-finite loss leaves the parameters and moments as they were.
        """
        steps = index + 1
        step_size = learning_rate * math.sqrt(1 - BETA2**steps) / (1 - BETA1**steps)
        dtype = self.mu_host.dtype.type
        self.state, loss, *self.last = self._step(self.state, self.data, dtype(step_size))
        return float(loss)

    def last_weights_and_gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """The weights drawn at the last step and the log density's gradient there."""
        weights, gradient = self.last
        return np.asarray(weights), np.asarray(gradient)

    def copy_to_host(self) -> None:
        """Write the current ``mu`` and ``rho`` into the approximation's arrays."""
        self.mu_host[...] = np.asarray(self.state["mu"])
        self.rho_host[...] = np.asarray(self.state["rho"])

    def fit_state(self) -> FitState:
        """What a step changes, for checkpoints: the parameters, Adam's moments, the key."""
        import jax.numpy as jnp

        state = FitState()
        for name in STATE:

            def write(array: np.ndarray, name: str = name) -> None:
                self.state[name] = jnp.asarray(array)

            state.add_synced(name, lambda name=name: np.asarray(self.state[name]), write)
        return state


class DeviceFactors(MeanFieldFactors):
    """The factors of a JAX fit: copied from the device when a callback or the result asks."""

    def __init__(self, approx: pm.MeanField, step: JaxStep) -> None:
        super().__init__(approx)
        self.step = step

    def means(self) -> dict[str, np.ndarray]:
        self.step.copy_to_host()
        return super().means()

    def stds(self) -> dict[str, np.ndarray]:
        self.step.copy_to_host()
        return super().stds()


def advance(state: dict, data: tuple, step_size, *, target, scale, update_rho, log_2pi):
    """One step of the fit, traced by ``jax.jit``.

    ``(state, data, step_size) -> (state, loss, weights, gradient)``; the arithmetic
    is :func:`bnn.inference.kernels.adam_step`'s.
    """
    import jax
    import jax.numpy as jnp

    key, noise_key, rows_key = jax.random.split(state["key"], 3)
    mu, rho = state["mu"], state["rho"]
    noise = jax.random.normal(noise_key, mu.shape, mu.dtype)
    sigma = jax.nn.softplus(rho)
    weights = mu + sigma * noise
    batch = ()
    if data:
        rows = jax.random.randint(rows_key, (target.batch_size,), 0, data[0].shape[0])
        batch = tuple(array[rows] for array in data)
    logp, gradient = target.function(weights, *batch)
    log_q = -0.5 * jnp.sum(noise.astype(jnp.float64) ** 2) - jnp.sum(
        jnp.log(sigma), dtype=jnp.float64
    )
    loss = (log_q - log_2pi - logp.astype(jnp.float64)) * float(scale)

    g = gradient * scale
    moved = {"key": key}
    moved["mu"], moved["adam_mu"] = adam(mu, state["adam_mu"], -g, step_size)
    if update_rho:
        d_rho = -(g * noise + scale / sigma) * jax.nn.sigmoid(rho)
        moved["rho"], moved["adam_rho"] = adam(rho, state["adam_rho"], d_rho, step_size)
    else:
        moved["rho"], moved["adam_rho"] = rho, state["adam_rho"]
    finite = jnp.isfinite(loss)
    kept = {
        name: value if name == "key" else jnp.where(finite, value, state[name])
        for name, value in moved.items()
    }
    return kept, loss, weights, gradient


def adam(parameter, moments, derivative, step_size):
    """``pm.adam``'s update of ``parameter`` along ``derivative``; ``moments`` is (2, n)."""
    import jax.numpy as jnp

    dtype = parameter.dtype
    beta1, beta2 = jnp.asarray(BETA1, dtype), jnp.asarray(BETA2, dtype)
    m = beta1 * moments[0] + (1 - beta1) * derivative
    v = beta2 * moments[1] + (1 - beta2) * derivative * derivative
    moved = parameter - step_size * m / (jnp.sqrt(v) + jnp.asarray(ADAM_EPSILON, dtype))
    return moved, jnp.stack([m, v])
