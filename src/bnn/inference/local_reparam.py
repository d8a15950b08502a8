r"""Mean-field ADVI with the local reparameterization trick (Kingma, Salimans & Welling 2015).

The variational family and the objective are those of :func:`bnn.inference.pymc_engine.fit_advi` on
:func:`bnn.model.pymc_model.bnn_model` with a :class:`bnn.model.priors.FixedNormal` prior:
one Gaussian
factor :math:`\mathcal{N}(\mu, \mathrm{softplus}(\rho)^2)` per weight and bias, and the
full-data ELBO with KL weight 1,

.. math::

    \mathcal{L} = \frac{N}{B} \sum_{i \in \text{batch}}
        \mathbb{E}_q\left[\log \mathrm{softmax}(f_W(x_i))_{y_i}\right]
        - \mathrm{KL}\left(q \,\|\, \mathcal{N}(0, \sigma^2 I)\right).

Only the gradient estimator differs. Plain ADVI draws every weight once per step and
shares that draw across the minibatch. Here the weights are never drawn. For a fixed
input row :math:`x`, the pre-activation :math:`a = x W + b` of a layer with independent
Gaussian weights is itself Gaussian:

.. math::

    a \sim \mathcal{N}\left(x \mu_W + \mu_b,\; x^2 \sigma_W^2 + \sigma_b^2\right)
    \quad\text{(elementwise squares, independent over outputs)},

so :math:`a` is drawn directly, with fresh noise for every example. The per-example
logits then have exactly the distribution plain ADVI gives them, so each term's
expectation, and hence the ELBO, is unchanged. What changes is that examples in a
minibatch no longer share one weight draw. That removes the covariance between their
gradient terms, which is what makes plain ADVI's variance shrink slowly as the batch
grows. It also replaces one normal draw per weight with one per pre-activation.

Hidden layers see the previous layer's *sampled* activations. The estimate stays
unbiased: given those activations, the layer's weights are independent of the
weights that produced them.

Convolutions use the standard approximation (Kingma et al. 2015, and the work that
followed). Each output position's pre-activation is drawn independently from its
marginal. That ignores the weight sharing across positions of one image, whose
pre-activations are correlated under q. Each position's marginal is still exact, but
the joint is not, so after the max-pool the conv net's objective is an approximation
to the ADVI objective rather than an unbiased estimate of it. Dense layers have no
such gap.

The KL term is analytic (see :func:`gaussian_kl`). PyMC evaluates
:math:`\log q - \log p` at the draw instead, which has the same expectation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.tensor import TensorVariable

from bnn.core.errors import ConfigError
from bnn.core.mnist import IMAGE_SHAPE
from bnn.inference.checkpoint import Checkpoint, FitState
from bnn.inference.pymc_engine import OPTIMIZERS, initial_means
from bnn.inference.settings import DivergedError, FitResult, learning_rate_at
from bnn.inference.step_loop import fit_result, run_steps
from bnn.model.layers import activate, image_patches, max_pool
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import categorical_logit_logp
from bnn.model.specs import ConvSpec, DenseSpec

CONFIG_FILE = "conf/inference/lrt.yaml"


class NoiseStream:
    """A seeded random generator threaded through one graph.

    Each draw advances the symbolic state; :meth:`updates` hands the final state
    to ``pytensor.function`` so the next call continues from it.
    """

    def __init__(self, seed: int) -> None:
        self.shared = pt.random.shared_rng(seed=seed)
        self.state = self.shared

    def normal(self, size, dtype: str) -> TensorVariable:
        """Standard normal draws of shape ``size``."""
        self.state, draws = self.state.normal(size=size, dtype=dtype)
        return draws

    def integers(self, high: int, size) -> TensorVariable:
        """Uniform integers in [0, high), drawn with replacement."""
        self.state, draws = self.state.integers(0, high, size=size)
        return draws

    def updates(self) -> dict:
        return {self.shared: self.state}


def gaussian_kl(mean, std, prior_sigma: float) -> TensorVariable:
    r"""Summed KL divergence of independent Gaussian factors from a N(0, prior_sigma²) prior.

    .. math::

        \mathrm{KL}\left(\mathcal{N}(\mu, s^2) \,\|\, \mathcal{N}(0, \sigma^2)\right)
        = \log\frac{\sigma}{s} + \frac{s^2 + \mu^2}{2\sigma^2} - \frac{1}{2}

    Parameters
    ----------
    mean, std : array_like or TensorVariable
        Means and standard deviations of the factors, of the same shape.
    prior_sigma : float
        Prior standard deviation :math:`\sigma`.

    Returns
    -------
    TensorVariable
        The scalar sum over every element.
    """
    mean, std = pt.as_tensor_variable(mean), pt.as_tensor_variable(std)
    variance_ratio = pt.square(std) / prior_sigma**2
    terms = -0.5 * pt.log(variance_ratio) + 0.5 * (variance_ratio + pt.square(mean / prior_sigma))
    return pt.sum(terms - 0.5)


def preactivation_moments(inputs, mean_W, std_W, mean_b, std_b) -> tuple:
    r"""Mean and variance of ``inputs @ W + b`` under independent Gaussian ``W`` and ``b``.

    .. math:: m = x \mu_W + \mu_b, \qquad v = x^2 \sigma_W^2 + \sigma_b^2

    ``inputs`` (rows, n_in) is held fixed; ``W`` is (n_in, n_out) and ``b`` is (n_out,).
    """
    mean = pt.dot(inputs, mean_W) + mean_b
    variance = pt.dot(pt.square(inputs), pt.square(std_W)) + pt.square(std_b)
    return mean, variance


def sample_preactivations(mean, variance, noise: NoiseStream) -> TensorVariable:
    """One draw of ``N(mean, variance)`` per element: fresh noise for every example and unit."""
    return mean + pt.sqrt(variance) * noise.normal(mean.shape, mean.dtype)


def lrt_dense(inputs, layer: str, means: dict, stds: dict, noise: NoiseStream) -> TensorVariable:
    """Sampled pre-activations of dense layer ``layer``, shape (batch, n_out)."""
    moments = preactivation_moments(
        inputs, means[f"{layer}_W"], stds[f"{layer}_W"], means[f"{layer}_b"], stds[f"{layer}_b"]
    )
    return sample_preactivations(*moments, noise)


def conv_moments(inputs, in_shape, kernel_size: int, mean_W, std_W, mean_b, std_b) -> tuple:
    """Mean and variance of a 'valid' convolution's outputs, each (batch, out_h, out_w, n_out).

    The same im2col layout as :func:`bnn.model.layers.conv2d`. The variance is the convolution
    of the squared patches with the squared kernel sds, plus the bias variance.
    """
    height, width, n_in = in_shape
    n_out = mean_W.shape[-1]
    patches = image_patches(inputs, kernel_size, height, width)
    flat = (kernel_size * kernel_size * n_in, n_out)
    mean, variance = preactivation_moments(
        patches, mean_W.reshape(flat), std_W.reshape(flat), mean_b, std_b
    )
    out_shape = (-1, height - kernel_size + 1, width - kernel_size + 1, n_out)
    return mean.reshape(out_shape), variance.reshape(out_shape)


def _lrt_dense_stack(outputs, names, spec, means, stds, noise) -> TensorVariable:
    for layer in names:
        outputs = lrt_dense(outputs, layer, means, stds, noise)
        if layer != "output":
            outputs = activate(outputs, spec.activation)
    return outputs


def lrt_dense_network(images, spec: DenseSpec, means, stds, noise) -> TensorVariable:
    """Sampled logits of :func:`bnn.model.networks.dense_network`, layer by layer."""
    return _lrt_dense_stack(images, spec.layer_names, spec, means, stds, noise)


def lrt_conv_network(images, spec: ConvSpec, means, stds, noise) -> TensorVariable:
    """Sampled logits of :func:`bnn.model.networks.conv_network`, block by block.

    A conv block draws its pre-activations, then max-pools, then applies tanh, as
    the conv net does (see the module docstring for what the per-position draw ignores).
    """
    outputs = images.reshape((-1, *IMAGE_SHAPE, 1))
    for layer, in_shape, out_shape in spec.conv_shapes:
        mean, variance = conv_moments(
            outputs,
            in_shape,
            spec.kernel_size,
            means[f"{layer}_W"],
            stds[f"{layer}_W"],
            means[f"{layer}_b"],
            stds[f"{layer}_b"],
        )
        conv_shape = (in_shape[0] - spec.kernel_size + 1, in_shape[1] - spec.kernel_size + 1)
        outputs = sample_preactivations(mean, variance, noise)
        outputs = max_pool(outputs, (*conv_shape, out_shape[2]), spec.pool_size)
        outputs = activate(outputs, spec.activation)
    outputs = outputs.reshape((-1, spec.n_features))
    return _lrt_dense_stack(outputs, spec.dense_names, spec, means, stds, noise)


# The local-reparameterisation pass of each network in bnn.model.specs.SPECS.
LRT_GRAPHS = {"dense": lrt_dense_network, "conv": lrt_conv_network}


def lrt_logits(images, spec, means: dict, stds: dict, noise: NoiseStream) -> TensorVariable:
    """Sampled logits (batch, 10) of ``spec``'s network for ``images`` (batch, 784).

    ``means`` and ``stds`` are keyed ``{layer}_W`` and ``{layer}_b``.
    """
    if spec.name not in LRT_GRAPHS:
        raise ConfigError(f"model: no local-reparameterization network for {spec!r}")
    return LRT_GRAPHS[spec.name](images, spec, means, stds, noise)


def negative_elbo(
    images,
    labels,
    spec,
    means: dict,
    stds: dict,
    prior_sigma: float,
    n_train: int,
    noise: NoiseStream,
) -> TensorVariable:
    r"""One local-reparameterization estimate of the negative full-data ELBO.

    .. math::

        -\frac{N}{B} \sum_{i=1}^{B} \log \mathrm{softmax}(a_i)_{y_i}
        + \sum_j \mathrm{KL}\left(q_j \,\|\, \mathcal{N}(0, \sigma^2)\right)

    ``images`` (B, 784) and ``labels`` (B,) are the minibatch; ``n_train`` is N.
    """
    logits = lrt_logits(images, spec, means, stds, noise)
    scale = n_train / images.shape[0]
    log_likelihood = categorical_logit_logp(labels, logits).sum()
    kl = sum(gaussian_kl(means[name], stds[name], prior_sigma) for name in means)
    return -pt.cast(scale, logits.dtype) * log_likelihood + kl


def weight_model(spec, prior: FixedNormal) -> pm.Model:
    """The network's weights as a PyMC model without data: PyMC's names, shapes and order."""
    with pm.Model() as model:
        build_network(pt.matrix("images"), spec, prior)
    return model


@dataclass
class LrtFactors:
    """The factors being fitted: one shared mean and sd parameter per weight array.

    Parameters
    ----------
    mu, rho : dict of str to pytensor shared variable
        Means and sd parameters (sd = softplus(rho)), keyed by PyMC's value-variable names.
    """

    mu: dict
    rho: dict

    def means(self) -> dict[str, np.ndarray]:
        """Current means as NumPy arrays (copies)."""
        return {name: variable.get_value() for name, variable in self.mu.items()}

    def stds(self) -> dict[str, np.ndarray]:
        """Current sds, softplus(rho), as NumPy arrays."""
        return {name: softplus(variable.get_value()) for name, variable in self.rho.items()}


def softplus(values: np.ndarray) -> np.ndarray:
    """``log(1 + exp(values))`` without overflow, in the input's dtype."""
    return np.logaddexp(values, 0).astype(values.dtype)


def inverse_softplus(values: np.ndarray) -> np.ndarray:
    """``rho`` such that ``softplus(rho) == values``, the way PyMC sets ``start_sigma``."""
    return np.log(np.expm1(np.abs(values)))


def check_prior(prior) -> FixedNormal:
    """Return ``prior`` if this estimator supports it.

    Raises
    ------
    ConfigError
        If ``prior`` is not :class:`bnn.model.priors.FixedNormal`.
    """
    if not isinstance(prior, FixedNormal):
        raise ConfigError(
            f"inference=lrt needs prior=fixed, got {type(prior).__name__}: the local "
            "reparameterization estimator handles fixed Normal priors only. Use prior=fixed, "
            f"or inference=advi for this prior ({CONFIG_FILE})"
        )
    return prior


def fit_local_reparam(
    images: np.ndarray,
    labels: np.ndarray,
    spec,
    prior: FixedNormal,
    settings,
    seed: int,
    callbacks: Sequence[Callable] = (),
    progressbar: bool = False,
    mode=None,
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Fit the mean-field posterior by minibatch ADVI with local reparameterization.

    Uses the same family, objective, starting point, optimizer and step-size
    schedule as :func:`bnn.inference.pymc_engine.fit_advi`. Each step draws ``batch_size``
    examples uniformly *with replacement*, as ``pm.Minibatch`` does.

    Parameters
    ----------
    images : ndarray
        Training images, shape (n, 28, 28) or (n, 784), scaled to [0, 1).
    labels : ndarray
        Integer class labels, shape (n,).
    spec : DenseSpec or ConvSpec
        The architecture.
    prior : FixedNormal
        The prior on every weight; no other family is supported.
    settings : AdviSettings
        Steps, batch size, optimizer, schedule, float dtype and starting point;
        ``settings.method`` is not read.
    seed : int
        Seeds the initial means (exactly as ``fit_advi`` does), the minibatches and the noise.
    callbacks : sequence of callable
        ``callback(factors, losses, step)`` after every step, as every engine calls
        them: ``factors`` are the :class:`LrtFactors`, ``losses`` is the history so
        far, and ``step`` counts the steps done (1-based, as in PyMC 6).
    progressbar : bool
        Show a progress bar. The default is False.
    mode : str or pytensor.compile.Mode, optional
        Compilation mode of the step function. The default, None, is PyTensor's default.
    checkpoint : Checkpoint, optional
        Resumes a stopped fit and saves this one as it goes. The default is None.

    Returns
    -------
    FitResult
        Per-variable means and sds, keyed and shaped as PyMC's ADVI would key them,
        the negative-ELBO estimate of every step, and the wall time.

    Raises
    ------
    ConfigError
        If the prior is not ``FixedNormal`` or the optimizer is unknown.
    DivergedError
        If the loss stops being finite.
    """
    check_prior(prior)
    if settings.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"inference.optimizer={settings.optimizer!r} is unknown; use one of "
            f"{', '.join(OPTIMIZERS)} ({CONFIG_FILE})"
        )
    with pytensor.config.change_flags(floatX=settings.float_dtype):
        dtype = pytensor.config.floatX
        start = initial_means(
            weight_model(spec, prior),
            settings.init_means,
            settings.init_scale,
            np.random.default_rng(seed),
        )
        start_rho = inverse_softplus(np.asarray(settings.start_sigma, dtype=np.float64))
        # One shared variable per weight array: no flattening or slicing in the step graph.
        factors = LrtFactors(
            mu={name: pytensor.shared(value, name=f"{name}_mu") for name, value in start.items()},
            rho={
                name: pytensor.shared(np.full(value.shape, start_rho, dtype), name=f"{name}_rho")
                for name, value in start.items()
            },
        )
        began = time.perf_counter()
        step_function, learning_rate = compile_step(
            images, labels, spec, prior, settings, factors, seed, mode
        )

        def step(index: int) -> float:
            learning_rate.set_value(np.asarray(learning_rate_at(index, settings), dtype))
            return step_function()

        def diverged(index: int, loss: float) -> DivergedError:
            return DivergedError(
                f"LRT diverged: the loss is {loss} at step {index + 1}. Lower "
                "inference.learning_rate or inference.start_sigma, or set "
                "inference.float_dtype=float64."
            )

        state = FitState()
        state.add_updated_shared("step", step_function)
        losses = run_steps(
            settings.n_iter,
            step,
            factors,
            callbacks,
            progressbar,
            "Fitting (LRT)",
            diverged,
            checkpoint,
            state,
            began,
        )
        return fit_result(factors, losses, began, checkpoint)


def compile_step(images, labels, spec, prior, settings, factors, seed: int, mode=None):
    """The step function (loss and parameter updates) and its step-size variable.

    The training set lives in shared variables. The minibatch indices and the noise
    come from one :class:`NoiseStream` seeded with ``seed``, so a step takes no inputs.
    """
    dtype = pytensor.config.floatX
    images = np.asarray(images, dtype=dtype).reshape(len(images), -1)
    all_images = pytensor.shared(images, name="images")
    all_labels = pytensor.shared(np.asarray(labels, dtype="int32"), name="labels")
    noise = NoiseStream(seed)
    rows = noise.integers(len(images), (settings.batch_size,))
    stds = {name: pt.softplus(rho) for name, rho in factors.rho.items()}
    loss = negative_elbo(
        all_images[rows], all_labels[rows], spec, factors.mu, stds, prior.sigma, len(images), noise
    )
    learning_rate = pytensor.shared(np.asarray(settings.learning_rate, dtype), name="learning_rate")
    optimizer = OPTIMIZERS[settings.optimizer](learning_rate=learning_rate)
    params = [*factors.mu.values(), *factors.rho.values()]
    updates = optimizer(loss, params) | noise.updates()
    step = pytensor.function([], loss, updates=updates, mode=mode)
    return step, learning_rate
