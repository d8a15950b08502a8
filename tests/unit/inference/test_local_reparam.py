"""Local reparameterization: its pieces against closed forms, its ELBO against PyMC's, its fits."""

import math

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import integrate, stats
from scipy.special import log_softmax

from bnn.core.errors import ConfigError
from bnn.data.dataset import LabelledImages
from bnn.inference.local_reparam import (
    NoiseStream,
    conv_moments,
    fit_local_reparam,
    gaussian_kl,
    lrt_dense,
    lrt_logits,
    negative_elbo,
    weight_model,
)
from bnn.inference.pymc_engine import initial_means
from bnn.inference.settings import AdviSettings, DivergedError
from bnn.inference.validation import ValidationMonitor
from bnn.model.priors import FixedNormal, HierarchicalNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import ConvSpec, DenseSpec
from bnn.predictive.forward import class_probabilities, conv2d

# Compiling for Numba (PyTensor's default mode) takes 10-20 s per graph; the tests
# check values, not speed.
MODE = "FAST_COMPILE"


@pytest.fixture(autouse=True)
def float64():
    with pytensor.config.change_flags(floatX="float64"):
        yield


def constants(arrays: dict) -> dict:
    return {name: pt.constant(value) for name, value in arrays.items()}


def draw(outputs, noise: NoiseStream, calls: int) -> np.ndarray:
    """Evaluate ``outputs`` ``calls`` times, the noise advancing between calls."""
    function = pytensor.function([], outputs, updates=noise.updates(), mode=MODE)
    return np.array([function() for _ in range(calls)])


def two_blobs(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of noisy images around two random centres: easy to separate."""
    rng = np.random.default_rng(seed)
    centres = rng.random((2, 784))
    labels = rng.integers(0, 2, n_images)
    images = 0.5 * centres[labels] + 0.5 * rng.random((n_images, 784))
    return images.astype(np.float32), labels


@pytest.mark.parametrize(
    ("mean", "std", "prior_sigma"), [(0.0, 1.0, 1.0), (0.3, 0.05, 1.0), (-1.2, 0.7, 0.1)]
)
def test_kl_matches_numerical_integration(mean, std, prior_sigma):
    q, p = stats.norm(mean, std), stats.norm(0.0, prior_sigma)
    expected, _ = integrate.quad(
        lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x)), mean - 12 * std, mean + 12 * std
    )
    assert gaussian_kl(mean, std, prior_sigma).eval() == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_kl_sums_elementwise_and_agrees_with_monte_carlo():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=(3, 2)), rng.uniform(0.1, 1.0, (3, 2))
    samples = mean + std * rng.standard_normal((200_000, 3, 2))
    log_ratio = stats.norm(mean, std).logpdf(samples) - stats.norm(0, 0.5).logpdf(samples)
    estimate = log_ratio.sum(axis=(1, 2))
    tolerance = 4 * estimate.std() / math.sqrt(len(estimate))
    assert gaussian_kl(mean, std, 0.5).eval() == pytest.approx(estimate.mean(), abs=tolerance)


def test_dense_preactivations_have_the_weight_posteriors_distribution():
    # The identity LRT rests on: for fixed x, x @ W + b with independent Gaussian W, b is
    # Gaussian with mean x @ mu_W + mu_b and variance x**2 @ sd_W**2 + sd_b**2.
    rng = np.random.default_rng(1)
    x = np.array([0.5, -1.0, 2.0])
    factors = {
        "layer_W": (rng.normal(size=(3, 2)), rng.uniform(0.1, 0.6, (3, 2))),
        "layer_b": (rng.normal(size=2), np.array([0.3, 0.05])),
    }
    means = {name: mean for name, (mean, _) in factors.items()}
    stds = {name: std for name, (_, std) in factors.items()}
    n_draws = 100_000
    noise = NoiseStream(2)
    # One row per draw: each row (example) gets fresh noise.
    inputs = pt.constant(np.tile(x, (n_draws, 1)))
    preactivations = lrt_dense(inputs, "layer", constants(means), constants(stds), noise)
    lrt = preactivations.eval(mode=MODE)
    mean = x @ means["layer_W"] + means["layer_b"]
    variance = x**2 @ stds["layer_W"] ** 2 + stds["layer_b"] ** 2
    assert (np.abs(lrt.mean(0) - mean) < 4 * np.sqrt(variance / n_draws)).all()
    # The sample variance of n Gaussian draws has sd variance * sqrt(2 / n).
    np.testing.assert_allclose(lrt.var(0), variance, rtol=4 * math.sqrt(2 / n_draws))
    assert abs(np.corrcoef(lrt.T)[0, 1]) < 4 / math.sqrt(n_draws)  # independent outputs

    weights = means["layer_W"] + stds["layer_W"] * rng.standard_normal((n_draws, 3, 2))
    biases = means["layer_b"] + stds["layer_b"] * rng.standard_normal((n_draws, 2))
    reference = np.einsum("i,nij->nj", x, weights) + biases
    for unit in range(2):
        assert stats.ks_2samp(lrt[:, unit], reference[:, unit]).pvalue > 1e-3


def test_conv_moments_are_convolutions_of_means_and_of_squares():
    rng = np.random.default_rng(3)
    images = rng.random((2, 6, 6, 2))
    mean_W, std_W = rng.normal(size=(3, 3, 2, 4)), rng.uniform(0.1, 0.5, (3, 3, 2, 4))
    mean_b, std_b = rng.normal(size=4), rng.uniform(0.1, 0.5, 4)
    mean, variance = conv_moments(pt.constant(images), (6, 6, 2), 3, mean_W, std_W, mean_b, std_b)
    np.testing.assert_allclose(
        mean.eval(mode=MODE), conv2d(images[None], mean_W[None], mean_b[None])[0]
    )
    np.testing.assert_allclose(
        variance.eval(mode=MODE),
        conv2d(images[None] ** 2, std_W[None] ** 2, std_b[None] ** 2)[0],
    )


@pytest.mark.parametrize(
    "spec", [DenseSpec(n_hidden=(5, 3)), ConvSpec(n_filters=(2,), n_hidden=(4,))]
)
def test_logits_at_zero_sd_are_the_networks_at_the_means(spec):
    # With every sd zero the draw is the mean network: checks the layer wiring, and the
    # conv net's pool-then-tanh order, against the NumPy forward pass.
    rng = np.random.default_rng(4)
    images = rng.random((3, 784))
    means = {
        name: rng.normal(0, 0.3, value.shape)
        for name, value in weight_model(spec, FixedNormal(1.0)).initial_point().items()
    }
    stds = {name: np.zeros_like(value) for name, value in means.items()}
    logits = lrt_logits(
        pt.constant(images), spec, constants(means), constants(stds), NoiseStream(0)
    )
    expected = class_probabilities(images, spec, {k: v[None] for k, v in means.items()})[0]
    np.testing.assert_allclose(
        log_softmax(logits.eval(mode=MODE), -1), np.log(expected), atol=1e-10
    )


def test_loss_is_unbiased_for_pymcs_elbo_on_softmax_regression():
    # No hidden layer: the logits of each example are exactly Gaussian under q, so the LRT
    # estimate and a weight-sampling estimate have the same expectation.
    rng = np.random.default_rng(5)
    n_train, spec, prior = 40, DenseSpec(n_hidden=()), FixedNormal(1.0)
    images, labels = rng.random((n_train, 784)), rng.integers(0, 10, n_train)
    means = {"output_W": rng.normal(0, 0.05, (784, 10)), "output_b": rng.normal(0, 0.5, 10)}
    stds = {"output_W": rng.uniform(0.05, 0.15, (784, 10)), "output_b": rng.uniform(0.2, 1, 10)}
    kl = sum(gaussian_kl(means[name], stds[name], prior.sigma).eval() for name in means)

    # LRT: 20 minibatches of 4,000 rows drawn with replacement; the scale n/B is 1/100.
    noise = NoiseStream(6)
    rows = noise.integers(n_train, (4000,))
    loss = negative_elbo(
        pt.constant(images)[rows],
        pt.constant(labels.astype("int32"))[rows],
        spec,
        constants(means),
        constants(stds),
        prior.sigma,
        n_train,
        noise,
    )
    lrt = draw(loss, noise, 20) - kl

    # Reference 1, NumPy: sample the weights, the full-data negative log-likelihood.
    reference = []
    for _ in range(40):
        weights = means["output_W"] + stds["output_W"] * rng.standard_normal((200, 784, 10))
        biases = means["output_b"] + stds["output_b"] * rng.standard_normal((200, 1, 10))
        log_p = log_softmax(images @ weights + biases, axis=-1)
        reference.append(-log_p[:, np.arange(n_train), labels].sum(axis=1))
    reference = np.concatenate(reference)

    # Reference 2, PyMC: the data term of ADVI's own objective on our model, one weight
    # draw and one minibatch of 40 per call.
    model = bnn_model(images, labels, spec, prior, batch_size=n_train)
    with model:
        start_sigma = {name: std.ravel() for name, std in stds.items()}
        approx = pm.ADVI(start=means, start_sigma=start_sigma).approx
    data_term = approx.set_size_and_deterministic(-approx.datalogp_norm, 1, 0)
    pymc_function = pm.pytensorf.compile([], data_term, mode=MODE, random_seed=7)
    pymc = np.array([pymc_function() for _ in range(1000)])

    def standard_error(values):
        return values.std() / math.sqrt(len(values))

    # About 0.2 (LRT), 0.3 (NumPy) and 0.9 (PyMC) on a value near 160. A 10% error in
    # the pre-activation variance moves the mean by about 4.
    assert lrt.mean() == pytest.approx(
        reference.mean(), abs=4 * math.hypot(standard_error(lrt), standard_error(reference))
    )
    assert lrt.mean() == pytest.approx(
        pymc.mean(), abs=4 * math.hypot(standard_error(lrt), standard_error(pymc))
    )


def test_fit_learns_an_easy_problem_reproducibly():
    images, labels = two_blobs(200, seed=8)
    spec = DenseSpec(n_hidden=(8,))
    settings = AdviSettings(n_iter=300, batch_size=50, learning_rate=0.01)
    runs = [
        fit_local_reparam(images, labels, spec, FixedNormal(1.0), settings, seed=9, mode=MODE)
        for _ in range(2)
    ]
    result = runs[0]
    means, stds = result.means, result.stds
    np.testing.assert_array_equal(result.loss_history, runs[1].loss_history)
    assert len(result.loss_history) == 300 and np.isfinite(result.loss_history).all()
    assert result.loss_history[-50:].mean() < result.loss_history[:50].mean()
    assert result.elbo_history[-1] == -result.loss_history[-1]
    point = {name: value[None] for name, value in means.items()}
    probabilities = class_probabilities(images, spec, point)[0]
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.95
    assert means["hidden1_W"].dtype == np.float32  # settings.float_dtype, the default
    assert all((std > 0).all() for std in stds.values())


def test_conv_fit_returns_pymcs_names_shapes_and_start():
    images, labels = two_blobs(16, seed=10)
    spec, prior = ConvSpec(n_filters=(2,), n_hidden=(4,)), FixedNormal(1.0)
    settings = AdviSettings(n_iter=3, batch_size=8, float_dtype="float64")
    result = fit_local_reparam(images, labels, spec, prior, settings, 11, mode=MODE)
    means, stds = result.means, result.stds
    pymc_model = bnn_model(images, labels, spec, prior, batch_size=8)
    expected = {name: value.shape for name, value in pymc_model.initial_point().items()}
    assert {name: value.shape for name, value in means.items()} == expected
    assert {name: value.shape for name, value in stds.items()} == expected
    assert len(result.loss_history) == 3

    # No steps: the start is fit_advi's for the same seed, sd = start_sigma everywhere.
    started = fit_local_reparam(
        images, labels, spec, prior, AdviSettings(n_iter=0, float_dtype="float64"), 11, mode=MODE
    )
    start, start_stds = started.means, started.stds
    pymc_start = initial_means(pymc_model, "glorot", 1.0, np.random.default_rng(11))
    for name, value in pymc_start.items():
        np.testing.assert_array_equal(start[name], value)
        np.testing.assert_allclose(start_stds[name], 1e-3)


def test_hierarchical_prior_is_refused_with_the_fix():
    images, labels = two_blobs(8, seed=12)
    with pytest.raises(ConfigError, match=r"prior=fixed.*conf/inference/lrt\.yaml"):
        fit_local_reparam(
            images, labels, DenseSpec(n_hidden=(4,)), HierarchicalNormal(), AdviSettings(), 0
        )


def test_divergence_names_the_step_and_the_fix():
    images, labels = two_blobs(16, seed=13)
    settings = AdviSettings(n_iter=50, batch_size=8, optimizer="sgd", learning_rate=1e30)
    with pytest.raises(DivergedError, match=r"at step \d+\. Lower inference\.learning_rate"):
        fit_local_reparam(
            images, labels, DenseSpec(n_hidden=(4,)), FixedNormal(1.0), settings, 0, mode=MODE
        )


def test_callbacks_see_the_factors_the_validation_monitor_reads():
    images, labels = two_blobs(40, seed=14)
    spec = DenseSpec(n_hidden=(4,))
    monitor = ValidationMonitor(LabelledImages(images[:10], labels[:10]), spec, every=2)
    seen = []

    def record(factors, losses, step):
        seen.append((step, len(losses), factors.means()))

    settings = AdviSettings(n_iter=6, batch_size=8)
    result = fit_local_reparam(
        images, labels, spec, FixedNormal(1.0), settings, 0, callbacks=[monitor, record], mode=MODE
    )
    # PyMC 6 passes the number of steps done; the monitor checks when (step + 1) % every == 0.
    assert [(step, n_losses) for step, n_losses, _ in seen] == [(k, k) for k in range(1, 7)]
    assert [step for step, _, _ in monitor.curve(result.began)] == [2, 4, 6]
    assert all(0 <= score <= 1 for _, _, score in monitor.curve(result.began))
    # The last callback saw the factors the fit returns.
    assert seen[-1][2].keys() == result.means.keys()
    for name, mean in result.means.items():
        np.testing.assert_array_equal(seen[-1][2][name], mean)
        assert result.stds[name].shape == mean.shape and (result.stds[name] > 0).all()
