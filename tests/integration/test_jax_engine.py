"""The JAX engine: the fused engine's objective, gradient and update, as one JAX program.

JAX is the benchmark's dependency group (``requirements-bench.lock``), which
``make test-integration`` installs; ``make test`` collects this file without it,
so JAX is imported when a test runs. The comparisons are between two different
computations (XLA against PyTensor's C backend and NumPy), so they hold to
float32 tolerance, not bit for bit; a JAX fit against itself is bit-identical.
"""

import numpy as np
import pytensor
import pytest

from bnn.data.dataset import LabelledImages
from bnn.inference.checkpoint import Checkpoint, CheckpointSettings
from bnn.inference.fitting import fit_model, fit_posterior, posterior_mean_accuracy
from bnn.inference.fused import starting_approximation
from bnn.inference.kernels import adam_step, draw_weights
from bnn.inference.logp_gradient import FAST_CPU_MODE, flat_logp
from bnn.inference.settings import AdviSettings, DivergedError
from bnn.model.priors import FixedNormal, HierarchicalNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import ConvSpec, DenseSpec
from helpers_fits import StopAt, assert_same_fit, fit
from helpers_mnist import synthetic_mnist


@pytest.fixture(scope="module")
def jax_engine():
    """The engine with JAX imported: at run time, not at collection."""
    from bnn.inference import jax_engine

    jax_engine.import_jax()
    return jax_engine


CASES = [
    (DenseSpec(n_hidden=(6,)), FixedNormal(1.0)),
    (DenseSpec(n_hidden=(6,)), HierarchicalNormal()),
    (ConvSpec(n_filters=(2, 3), n_hidden=(5,)), FixedNormal(1.0)),
]


def tiny_model(spec, prior, n=48, batch_size=16):
    rng = np.random.default_rng(0)
    images, labels = rng.random((n, 784)), rng.integers(0, 10, n)
    with pytensor.config.change_flags(floatX="float32"):
        return bnn_model(images, labels, spec, prior, batch_size)


def start(model, start_sigma):
    """The approximation a fit of ``model`` starts from, in float32 as the fits build it."""
    with pytensor.config.change_flags(floatX="float32"):
        return starting_approximation(model, AdviSettings(start_sigma=start_sigma), seed=1)


def fused_function_of_batch(model, ordering):
    """The fused engine's own graph (NumPy kernels, C backend), minibatch rows as inputs."""
    from bnn.inference.jax_logp import minibatch_as_input

    flat, logp = flat_logp(model, ordering, "float32")
    logp, placeholders, data = minibatch_as_input(flat, logp)
    gradient = pytensor.grad(logp, flat)
    function = pytensor.function([flat, *placeholders], [logp, gradient], mode=FAST_CPU_MODE)
    return function, data


@pytest.mark.parametrize(("spec", "prior"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_log_density_and_gradient_equal_the_fused_engines(jax_engine, spec, prior):
    from bnn.inference.jax_logp import batch_logp_gradient

    model = tiny_model(spec, prior)
    approx = start(model, 0.3)
    ordering = approx.groups[0].ordering
    target = batch_logp_gradient(model, ordering, "float32")
    fused, data = fused_function_of_batch(model, ordering)
    assert target.batch_size == 16 and [a.shape for a in target.data] == [(48, 784), (48,)]
    rng = np.random.default_rng(2)
    weights = approx.groups[0].params_dict["mu"].get_value() + rng.normal(
        0, 0.3, approx.ndim
    ).astype(np.float32)
    rows = rng.integers(0, 48, 16)
    batch = [array[rows] for array in data]
    logp, gradient = (np.asarray(x) for x in target.function(weights, *batch))
    expected_logp, expected_gradient = fused(weights, *batch)
    assert logp.dtype == np.float32 and gradient.dtype == np.float32  # no float64 leaks
    # float32: sums of ~5,000 terms in two different orders.
    assert logp == pytest.approx(float(expected_logp), rel=1e-5)
    scale = np.abs(expected_gradient).max()
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-5 * scale)


def test_one_step_equals_the_fused_kernels_on_the_same_noise_and_rows(jax_engine):
    """The loss and Adam's update of mu, rho and both moments, against the Numba kernels."""
    import jax

    model = tiny_model(DenseSpec(n_hidden=(6,)), FixedNormal(1.0))
    approx = start(model, 0.05)
    group = approx.groups[0]
    mu0 = group.params_dict["mu"].get_value().copy()
    rho0 = group.params_dict["rho"].get_value().copy()
    scale = 1 / float(approx.symbolic_normalizing_constant.eval())
    target = jax_engine.batch_logp_gradient(model, group.ordering, "float32")
    step = jax_engine.JaxStep(mu0.copy(), rho0.copy(), target, scale, True, seed=5)
    key = step.state["key"]
    # The step's own draws, reproduced: its key splits into (next, noise, rows).
    _, noise_key, rows_key = jax.random.split(key, 3)
    noise = np.asarray(jax.random.normal(noise_key, mu0.shape, mu0.dtype))
    rows = np.asarray(jax.random.randint(rows_key, (16,), 0, 48))
    loss = step(learning_rate=0.01, index=0)

    fused, data = fused_function_of_batch(model, group.ordering)
    mu, rho = mu0.copy(), rho0.copy()
    weights, sigma, slope = (np.empty_like(mu) for _ in range(3))
    draw_weights(mu, rho, noise, weights, sigma, slope)
    logp, gradient = fused(weights, *[array[rows] for array in data])
    adam_mu, adam_rho = np.zeros((2, mu.size), mu.dtype), np.zeros((2, mu.size), mu.dtype)
    f32 = np.float32
    step_size = f32(0.01 * np.sqrt(1 - 0.999) / (1 - 0.9))
    adam_step(mu, rho, adam_mu, adam_rho, noise, sigma, slope, gradient, f32(scale),
              step_size, f32(0.9), f32(0.999), f32(1e-8), True)  # fmt: skip
    log_q = -0.5 * np.dot(noise.astype(float), noise) - np.log(sigma).sum(dtype=float)
    expected_loss = (log_q - 0.5 * mu.size * np.log(2 * np.pi) - float(logp)) * scale
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    state = {name: np.asarray(step.state[name]) for name in ("mu", "rho", "adam_mu", "adam_rho")}
    # Adam's first step moves each parameter by about step_size·sign(d): where the float32
    # gradients agree in sign the moves agree closely.
    for name, expected in (("mu", mu), ("rho", rho), ("adam_mu", adam_mu), ("adam_rho", adam_rho)):
        np.testing.assert_allclose(state[name], expected, rtol=2e-4, atol=1e-6, err_msg=name)
    assert not np.array_equal(state["mu"], mu0) and not np.array_equal(state["rho"], rho0)


def synthetic_split(n_train=400, n_test=200):
    arrays = synthetic_mnist(n_train, n_test, seed=4)
    as_data = lambda images, labels: LabelledImages(images / np.float32(255), labels)  # noqa: E731
    return (
        as_data(arrays["train_images"], arrays["train_labels"]),
        as_data(arrays["test_images"], arrays["test_labels"]),
    )


@pytest.mark.parametrize(
    "spec", [DenseSpec(n_hidden=(16,)), ConvSpec(n_filters=(3,), n_hidden=(8,))], ids=str
)
def test_a_short_fit_reaches_the_fused_engines_accuracy(jax_engine, spec):
    train, test = synthetic_split()
    accuracies = {}
    for engine in ("fused", "jax"):
        settings = AdviSettings(engine=engine, n_iter=150, batch_size=50, learning_rate=0.01)
        posterior, result = fit_posterior(
            train, spec, FixedNormal(1.0), settings, seed=2, meta={}, progressbar=False
        )
        assert np.isfinite(result.loss_history).all()
        accuracies[engine] = posterior_mean_accuracy(posterior, test)
    assert accuracies["fused"] > 0.9  # the blobs are learnable in 150 steps
    assert accuracies["jax"] >= accuracies["fused"] - 0.03, accuracies


def test_the_same_seed_gives_the_same_fit_and_a_resumed_fit_is_bit_identical(jax_engine, tmp_path):
    spec = DenseSpec(n_hidden=(5,))
    reference = fit("advi", "jax", spec)
    assert_same_fit(reference, fit("advi", "jax", spec))
    settings = CheckpointSettings(folder=tmp_path, every_steps=7, every_seconds=3600)
    with pytest.raises(RuntimeError):
        fit("advi", "jax", spec, Checkpoint(settings, key="k"), StopAt(17, "crash"))
    resumed = Checkpoint(settings, key="k")
    assert resumed.saved_meta()["step"] == 14
    assert_same_fit(reference, fit("advi", "jax", spec, resumed))
    assert resumed.resumed_step == 14


def test_map_keeps_rho_and_a_divergence_names_the_variable(jax_engine):
    model = tiny_model(DenseSpec(n_hidden=(6,)), FixedNormal(1.0))
    point = AdviSettings(method="map", engine="jax", n_iter=20, batch_size=16)
    result = fit_model(model, point, seed=1, progressbar=False)
    stds = np.concatenate([s.ravel() for s in result.stds.values()])
    np.testing.assert_allclose(stds, stds[0])  # every sd still the starting MAP_SIGMA
    wild = AdviSettings(engine="jax", n_iter=50, batch_size=16, learning_rate=1e4, start_sigma=50)
    with pytest.raises(DivergedError, match=r"approximation of RV `\w+`.* at step \d+"):
        fit_model(model, wild, seed=1, progressbar=False)
