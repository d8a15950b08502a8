"""The fused ADVI engine: its kernels, its log-density function, and its step against PyMC's."""

import math

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.replace import graph_replace
from scipy import stats

from bnn.core.errors import ConfigError
from bnn.inference.fitting import fit_model
from bnn.inference.fused import ADAM_EPSILON, BETA1, BETA2, FusedStep, fit_fused
from bnn.inference.kernels import SUM_BLOCK, draw_weights, standard_normal
from bnn.inference.logp_gradient import FAST_CPU_MODE, NumpyTanh, compile_logp_gradient
from bnn.inference.settings import AdviSettings, DivergedError
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal, HierarchicalNormal
from bnn.model.pymc_model import bnn_model, label_variable
from bnn.model.specs import ConvSpec, DenseSpec


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standard_normal_draws_are_standard_normal_and_seeded(dtype):
    draws = np.empty(200_001, dtype)  # odd: the last draw has no Box–Muller partner
    standard_normal(np.random.default_rng(0), draws, np.empty(draws.size + 1, dtype))
    assert draws.dtype == dtype and np.isfinite(draws).all()
    assert stats.kstest(draws, "norm").pvalue > 0.01
    assert abs(draws.mean()) < 0.01 and draws.var() == pytest.approx(1.0, abs=0.01)
    # cos and sin halves of one pair are uncorrelated
    half = draws.size // 2
    assert abs(np.corrcoef(draws[:half], draws[half : 2 * half])[0, 1]) < 0.01
    again = np.empty_like(draws)
    standard_normal(np.random.default_rng(0), again, np.empty(draws.size + 1, dtype))
    np.testing.assert_array_equal(draws, again)


def test_float32_normals_are_box_muller_of_the_generators_uniforms():
    # The float32 stream, defined: 2 * pairs float32 uniforms, the first half giving
    # the radii (of 1 - u) and the second the angles; cosines first, then sines.
    draws = np.empty(11, np.float32)
    standard_normal(np.random.default_rng(5), draws, np.empty(12, np.float32))
    uniforms = np.random.default_rng(5).random(12, dtype=np.float32).astype(np.float64)
    radius = np.sqrt(-2 * np.log(1 - uniforms[:6]))
    angle = 2 * np.pi * uniforms[6:]
    expected = np.concatenate([(radius * np.cos(angle))[:5], radius * np.sin(angle)])
    # Different computations (float32 polynomials, float64 libm): float32 tolerance.
    np.testing.assert_allclose(draws, expected, rtol=5e-7, atol=5e-7)


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float32, 5e-7), (np.float64, 1e-14)])
def test_draw_weights_is_mu_plus_softplus_rho_times_noise(dtype, rtol):
    rho = np.array([-40.0, -7.0, -1.0, 0.0, 0.5, 3.0, 25.0, 90.0] * 300, dtype)
    mu = np.linspace(-1, 1, rho.size).astype(dtype)
    noise = np.linspace(2, -2, rho.size).astype(dtype)
    weights, sigma, slope = (np.empty_like(rho) for _ in range(3))
    log_sigma_sum, noise_sum = draw_weights(mu, rho, noise, weights, sigma, slope)
    exact_sigma = np.logaddexp(0, rho.astype(np.float64))
    np.testing.assert_allclose(sigma, exact_sigma, rtol=rtol)
    np.testing.assert_allclose(slope, 1 / (1 + np.exp(-rho.astype(np.float64))), rtol=rtol)
    np.testing.assert_allclose(weights, mu + exact_sigma * noise, rtol=rtol, atol=rtol)
    # The sums of log q, over more than one of the loop's blocks.
    assert rho.size > 2 * SUM_BLOCK
    assert log_sigma_sum == pytest.approx(np.log(exact_sigma).sum(), rel=rtol)
    assert noise_sum == pytest.approx(np.square(noise, dtype=np.float64).sum(), rel=rtol)


def test_numpy_tanh_value_and_gradient():
    rng = np.random.default_rng(0)
    x = pt.matrix("x", dtype="float64")
    y = NumpyTanh()(x)
    f = pytensor.function([x], [y, pt.grad(y.sum(), x)], mode=FAST_CPU_MODE)
    values = rng.normal(size=(4, 5)) * 3
    value, gradient = f(values)
    np.testing.assert_allclose(value, np.tanh(values))
    np.testing.assert_allclose(gradient, 1 - np.tanh(values) ** 2)
    pytensor.gradient.verify_grad(NumpyTanh(), [values], rng=rng, mode=FAST_CPU_MODE)


def small_network_model(prior, seed=0, spec=None):
    """A tanh net on fixed data (no minibatch): its log density is deterministic.

    Half the pixels are 0, as in MNIST's margins: the conv net's pools see ties.
    """
    rng = np.random.default_rng(seed)
    images = rng.random((12, 784)) * (rng.random((12, 784)) < 0.5)
    labels = rng.integers(0, 10, 12).astype("int32")
    spec = spec or DenseSpec(n_hidden=(3,))
    with pm.Model() as model:
        logits = build_network(pt.as_tensor_variable(images), spec, prior)
        label_variable(logits, observed=labels)
    return model


@pytest.mark.parametrize(
    ("prior", "spec"),
    [
        (FixedNormal(1.0), None),
        (HierarchicalNormal(), None),
        (HierarchicalNormal(), ConvSpec(n_filters=(3, 2), n_hidden=(4,))),
    ],
    ids=["dense fixed", "dense hierarchical", "conv hierarchical"],
)
def test_logp_gradient_equals_pytensor_default_mode(prior, spec):
    model = small_network_model(prior, spec=spec)
    with model:
        group = pm.MeanField().groups[0]
    logp_gradient = compile_logp_gradient(model, group.ordering, "float64", seed=0)
    flat = np.random.default_rng(1).normal(size=group.ddim) * 0.3
    point = {name: flat[where].reshape(shape) for name, where, shape, _ in group.ordering.values()}
    value, gradient = logp_gradient(flat)
    reference = model.compile_logp()(point)
    reference_gradient = model.compile_dlogp()(point)
    assert float(value) == pytest.approx(float(reference), rel=1e-10)
    # compile_dlogp ravels in model.value_vars order; rebuild ours in that order
    ours = np.concatenate([gradient[group.ordering[v.name][1]] for v in model.value_vars])
    np.testing.assert_allclose(ours, reference_gradient, rtol=1e-8, atol=1e-10)


def pymc_reference_step(model, start, start_sigma, learning_rate):
    """``pm.adam`` on PyMC's own ADVI loss, with the noise as an input."""
    with model:
        approx = pm.MeanField(
            start=start,
            start_sigma={name: np.full(np.size(v), start_sigma) for name, v in start.items()},
        )
    group = approx.groups[0]
    noise = pt.vector("noise", dtype="float64")
    loss = graph_replace(
        approx.logq_norm - approx.logp_norm, {group.symbolic_initial: noise[None, :]}
    )
    params = [group.params_dict["mu"], group.params_dict["rho"]]
    updates = pm.adam(loss, params, learning_rate=learning_rate)
    step = pytensor.function([noise], loss, updates=updates)
    return step, params


@pytest.mark.parametrize("prior", [FixedNormal(1.0), HierarchicalNormal()])
def test_fused_steps_equal_pymc_objective_and_adam_on_the_same_noise(prior):
    model = small_network_model(prior)
    start = model.initial_point()
    start = {
        name: np.random.default_rng(2).normal(size=np.shape(v)) * 0.1 for name, v in start.items()
    }
    learning_rate = 0.01
    reference_step, (ref_mu, ref_rho) = pymc_reference_step(model, start, 0.05, learning_rate)
    with model:
        group = pm.MeanField(
            start=start,
            start_sigma={name: np.full(np.size(v), 0.05) for name, v in start.items()},
        ).groups[0]
    mu = group.params_dict["mu"].get_value(borrow=True)
    rho = group.params_dict["rho"].get_value(borrow=True)
    np.testing.assert_allclose(mu, ref_mu.get_value())
    logp_gradient = compile_logp_gradient(model, group.ordering, "float64", seed=0)
    step = FusedStep(mu, rho, np.random.default_rng(3))
    for index in range(3):
        loss = step(index, logp_gradient, np.float64(1.0), learning_rate, True)
        reference_loss = reference_step(step.noise)
        assert loss == pytest.approx(float(reference_loss), rel=1e-9)
        np.testing.assert_allclose(mu, ref_mu.get_value(), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(rho, ref_rho.get_value(), rtol=1e-7, atol=1e-12)
    assert (BETA1, BETA2, ADAM_EPSILON) == (0.9, 0.999, 1e-8)  # pm.adam's defaults


def conjugate_model():
    y = np.random.default_rng(0).normal(1.5, 1.0, size=40)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        pm.Normal("y", mu, 1.0, observed=y)
    return model, y


def test_fused_fit_recovers_the_conjugate_posterior_and_map_its_mode():
    model, y = conjugate_model()
    n = len(y)
    settings = AdviSettings(
        n_iter=6000,
        learning_rate=0.02,
        lr_final_fraction=0.01,
        float_dtype="float64",
        start_sigma=0.5,
    )
    fitted = fit_fused(model, settings, seed=1, progressbar=False)
    assert fitted.means["mu"] == pytest.approx(y.sum() / (n + 1), abs=0.02)
    assert fitted.stds["mu"] == pytest.approx(1 / math.sqrt(n + 1), rel=0.1)
    point = AdviSettings(
        method="map", n_iter=3000, learning_rate=0.02, lr_final_fraction=0.01, float_dtype="float64"
    )
    mode = fit_fused(model, point, seed=1, progressbar=False)
    assert mode.means["mu"] == pytest.approx(y.sum() / (n + 1), abs=1e-3)
    assert mode.stds["mu"] == pytest.approx(1e-6, rel=1e-6)  # frozen at MAP_SIGMA


def test_fused_fit_is_reproducible_and_reports_like_pm_fit():
    model = small_network_model(FixedNormal(1.0))
    settings = AdviSettings(n_iter=20, float_dtype="float64")
    seen = []
    runs = [
        fit_model(
            model,
            settings,
            seed=5,
            progressbar=False,
            callbacks=[lambda _approx, _losses, step: seen.append(step)],
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].loss_history, runs[1].loss_history)
    for name, mean in runs[0].means.items():
        np.testing.assert_array_equal(mean, runs[1].means[name])
    assert seen == [*range(1, 21)] * 2
    assert np.isfinite(runs[0].loss_history).all() and len(runs[0].loss_history) == 20
    other = fit_model(model, settings, seed=6, progressbar=False)
    assert not np.array_equal(other.loss_history, runs[0].loss_history)


def test_fused_divergence_is_one_error_naming_a_variable():
    model = small_network_model(FixedNormal(1.0))
    settings = AdviSettings(n_iter=50, learning_rate=1e30, float_dtype="float32")
    with pytest.raises(
        DivergedError, match=r"ADVI diverged: .*RV `\w+`.* inference\.learning_rate"
    ):
        with pytensor.config.change_flags(floatX="float32"):
            fit_fused(small_network_model(FixedNormal(1.0)), settings, seed=0, progressbar=False)
    with pytest.raises(ConfigError, match=r"engine=fused implements Adam only.*engine=pymc"):
        fit_fused(model, AdviSettings(optimizer="sgd"), seed=0, progressbar=False)


def test_fused_fit_of_a_minibatch_conv_net_is_finite_and_reproducible():
    rng = np.random.default_rng(0)
    images, labels = rng.random((40, 784), dtype=np.float32), rng.integers(0, 10, 40)
    spec = ConvSpec(n_filters=(2, 2), n_hidden=(4,))
    settings = AdviSettings(n_iter=6, batch_size=8)
    histories = []
    for _ in range(2):
        with pytensor.config.change_flags(floatX="float32"):
            model = bnn_model(images, labels, spec, FixedNormal(1.0), batch_size=8)
            histories.append(fit_fused(model, settings, seed=3, progressbar=False).loss_history)
    assert np.isfinite(histories[0]).all()
    np.testing.assert_array_equal(histories[0], histories[1])


def test_the_jax_engine_without_jax_names_the_install(monkeypatch):
    """``make test`` runs without JAX (the benchmark group): the engine says how to get it."""
    import sys

    from bnn.inference.jax_engine import fit_jax

    monkeypatch.setitem(sys.modules, "jax", None)  # `import jax` raises ImportError
    settings = AdviSettings(engine="jax", n_iter=2)
    with pytest.raises(ConfigError, match=r"needs JAX.*make bench-env"):
        fit_jax(small_network_model(FixedNormal(1.0)), settings, seed=0)
    with pytest.raises(ConfigError, match=r"inference\.engine=jax implements Adam only"):
        fit_jax(small_network_model(FixedNormal(1.0)), AdviSettings(optimizer="sgd"), seed=0)
