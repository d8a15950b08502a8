"""The peer in ``make bench``: the same Bayesian network fitted by NumPyro's SVI.

A user choosing a tool for SVI on a CPU would try NumPyro, so the benchmark
fits the project's networks with it, as its documentation does (an ``AutoNormal``
guide, ``Trace_ELBO`` with one particle, Adam, one jitted ``svi.update`` per
step), and holds everything that defines the problem equal to our fit:

- the network: :func:`logits` is ``bnn.model.networks`` in JAX (channels-last
  'valid' convolutions, max-pool then tanh, dense layers), checked against our
  NumPy forward pass (:mod:`bnn.predictive.forward`) on the same weights;
- the prior: Normal(0, ``prior.sigma``) on every weight and bias;
- the likelihood: categorical on the logits, the minibatch scaled to the whole
  training set, minibatches drawn with replacement like ``pm.Minibatch``;
- the start: our initial means (:func:`bnn.inference.pymc_engine.initial_means`
  on the same seed) and ``init_scale=start_sigma``;
- Adam with our step size and cosine schedule, float32, the batch size.

JAX and NumPyro are a benchmark-only dependency group (``requirements-bench.lock``,
installed by ``make bench``); nothing under ``src/`` imports them.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value

from bnn.core.mnist import IMAGE_SHAPE
from bnn.inference.settings import AdviSettings
from bnn.model.specs import ConvSpec, DenseSpec


def dense_stack(outputs, names: list[str], params: dict):
    """Dense layers ``names``; tanh on every one but the output."""
    for layer in names:
        outputs = outputs @ params[f"{layer}_W"] + params[f"{layer}_b"]
        if layer != "output":
            outputs = jnp.tanh(outputs)
    return outputs


def conv_features(images, spec: ConvSpec, params: dict):
    """The convolution blocks of ``spec`` on (batch, 784) images: (batch, n_features)."""
    outputs = images.reshape((-1, *IMAGE_SHAPE, 1))
    window = (1, spec.pool_size, spec.pool_size, 1)
    for layer, _, _ in spec.conv_shapes:
        outputs = lax.conv_general_dilated(
            outputs,
            params[f"{layer}_W"],  # (k, k, c_in, c_out): HWIO
            window_strides=(1, 1),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        outputs = outputs + params[f"{layer}_b"]
        # Pool, then tanh, as bnn.model.networks does (equal, tanh being increasing).
        outputs = lax.reduce_window(outputs, -jnp.inf, lax.max, window, window, "VALID")
        outputs = jnp.tanh(outputs)
    return outputs.reshape((outputs.shape[0], spec.n_features))


def logits(images, spec: DenseSpec | ConvSpec, params: dict):
    """The network's logits for (batch, 784) images under one set of weights."""
    if spec.name == "dense":
        return dense_stack(images, spec.layer_names, params)
    return dense_stack(conv_features(images, spec, params), spec.dense_names, params)


def bnn(images, labels, spec, sigma: float, n_total: int) -> None:
    """The NumPyro model: Normal(0, sigma) weights, a likelihood scaled to ``n_total`` images."""
    params = {
        name: numpyro.sample(name, dist.Normal(0.0, sigma).expand(shape).to_event(len(shape)))
        for name, shape in spec.weight_shapes().items()
    }
    batch = images.shape[0]
    with numpyro.plate("data", batch), numpyro.handlers.scale(scale=n_total / batch):
        numpyro.sample("label", dist.Categorical(logits=logits(images, spec, params)), obs=labels)


class PeerFit:
    """A NumPyro SVI fit of ``spec`` on ``(images, labels)``, stepped by :meth:`step`.

    Parameters
    ----------
    images, labels : ndarray
        Training data, (n, 784) float32 and (n,) integers.
    spec : DenseSpec or ConvSpec
        The network.
    sigma : float
        The prior's scale.
    settings : AdviSettings
        Batch size, learning rate and schedule, start sigma.
    start : dict of ndarray
        Initial means, keyed by weight name (our fit's, from the same seed).
    seed : int
        Seeds the guide's noise and the minibatches.
    """

    def __init__(self, images, labels, spec, sigma, settings: AdviSettings, start, seed) -> None:
        self.settings = settings
        self.images = jnp.asarray(images, dtype=jnp.float32)
        self.labels = jnp.asarray(labels, dtype=jnp.int32)
        self.rng = np.random.default_rng(seed)
        guide = AutoNormal(
            bnn,
            init_loc_fn=init_to_value(values={k: jnp.asarray(v) for k, v in start.items()}),
            init_scale=settings.start_sigma,
        )
        optimizer = numpyro.optim.Adam(step_size=lambda i: self._learning_rate(i))
        self.svi = SVI(bnn, guide, optimizer, loss=Trace_ELBO())
        static = {"spec": spec, "sigma": sigma, "n_total": len(labels)}
        self.update = jax.jit(
            lambda state, images, labels, rows: self.svi.update(
                state, images[rows], labels[rows], **static
            )
        )
        rows = self._rows()
        self.state = self.svi.init(
            jax.random.PRNGKey(seed), self.images[rows], self.labels[rows], **static
        )

    def _learning_rate(self, index):
        # Our cosine schedule in jnp, since the optimizer traces it with a step counter.
        settings = self.settings
        if settings.lr_decay == "none":
            return settings.learning_rate
        progress = jnp.minimum(index / max(settings.n_iter - 1, 1), 1.0)
        floor = settings.lr_final_fraction
        cosine = 0.5 * (1 + jnp.cos(math.pi * progress))
        return settings.learning_rate * (floor + (1 - floor) * cosine)

    def _rows(self) -> np.ndarray:
        return self.rng.integers(0, self.labels.shape[0], self.settings.batch_size)

    def step(self) -> float:
        """One SVI step; returns its loss (waits for it, so a step's time is its own)."""
        self.state, loss = self.update(self.state, self.images, self.labels, self._rows())
        return float(loss)

    def means(self) -> dict[str, np.ndarray]:
        """The guide's current means, keyed by weight name."""
        params = self.svi.get_params(self.state)
        return {
            key.removesuffix("_auto_loc"): np.asarray(v)
            for key, v in params.items()
            if key.endswith("_auto_loc")
        }


def measure(images, labels, spec, sigma, settings, start, seed, warmup: int, iters: int) -> dict:
    """Steps per second of a NumPyro fit after ``warmup`` steps (tracing, compilation)."""
    fit = PeerFit(images, labels, spec, sigma, settings, start, seed)
    for _ in range(warmup):
        fit.step()
    began = time.perf_counter()
    for _ in range(iters):
        fit.step()
    return {
        "it_per_s": iters / (time.perf_counter() - began),
        "dtype": str(fit.images.dtype),
        "versions": {"numpyro": numpyro.__version__, "jax": jax.__version__},
    }
