"""Prior families: the variables they create, their densities, and what the network sees."""

import numpy as np
import pymc as pm
import pytensor
import pytest
from scipy import stats

from bnn.inference.pymc_engine import fit_advi
from bnn.inference.settings import AdviSettings
from bnn.model.priors import PRIOR_FAMILIES, FixedNormal, HierarchicalNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import DenseSpec
from bnn.model.weights import network_weights
from bnn.predictive.chunked import sample_predictive
from bnn.predictive.forward import class_probabilities
from bnn.predictive.posterior import Posterior

SPEC = DenseSpec(n_hidden=(4,))
WEIGHTS = ["hidden1_W", "hidden1_b", "output_W", "output_b"]
SHAPES = {"hidden1_W": (784, 4), "hidden1_b": (4,), "output_W": (4, 10), "output_b": (10,)}
# PyMC's HalfNormal log-density differs from SciPy's by about 2e-9 (a rounded
# normalising constant), so log-densities are compared to 1e-8.
LOGP_ATOL = 1e-8


def tiny_model(prior, n_images=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n_images, 28, 28))
    labels = rng.integers(0, 10, n_images)
    with pytensor.config.change_flags(floatX="float64"):
        return bnn_model(images, labels, SPEC, prior, batch_size=8)


def test_families_are_registered_by_config_name():
    assert PRIOR_FAMILIES == {"fixed": FixedNormal, "hier": HierarchicalNormal}
    assert HierarchicalNormal() == HierarchicalNormal(scale_sigma=1.0, noncentred=False)


def test_fixed_prior_creates_one_variable_per_weight_array():
    model = tiny_model(FixedNormal(sigma=1.0))
    assert [rv.name for rv in model.free_RVs] == WEIGHTS
    assert model.deterministics == []
    assert {rv.name: model.initial_point()[rv.name].shape for rv in model.free_RVs} == SHAPES


def test_centred_hier_adds_a_scale_per_weight_array():
    model = tiny_model(HierarchicalNormal())
    scales = [f"{name}_scale" for name in WEIGHTS]
    assert sorted(rv.name for rv in model.free_RVs) == sorted(WEIGHTS + scales)
    assert model.deterministics == []
    values = {value.name for value in model.value_vars}
    assert {f"{name}_log__" for name in scales} <= values
    assert model.initial_point()["hidden1_W_scale_log__"].shape == ()


def test_noncentred_hier_builds_weights_as_deterministics():
    model = tiny_model(HierarchicalNormal(noncentred=True))
    free = sorted(rv.name for rv in model.free_RVs)
    assert free == sorted([f"{n}_raw" for n in WEIGHTS] + [f"{n}_scale" for n in WEIGHTS])
    assert [d.name for d in model.deterministics] == WEIGHTS
    assert model.initial_point()["output_W_raw"].shape == SHAPES["output_W"]


@pytest.mark.parametrize("jacobian", [True, False])
def test_centred_log_density_is_half_normal_plus_normal(jacobian):
    scale_sigma, tau = 0.7, 0.4
    w = np.array([0.3, -0.1, 0.55])
    with pm.Model() as model:
        HierarchicalNormal(scale_sigma=scale_sigma)("w", (3,))
    logp = model.compile_logp(jacobian=jacobian)({"w_scale_log__": np.log(tau), "w": w})
    expected = stats.halfnorm.logpdf(tau, scale=scale_sigma) + stats.norm.logpdf(w, 0, tau).sum()
    # The scale is sampled as log(tau); its Jacobian adds log(tau).
    expected += np.log(tau) if jacobian else 0.0
    np.testing.assert_allclose(logp, expected, rtol=0, atol=LOGP_ATOL)


def test_noncentred_log_density_is_half_normal_plus_standard_normal():
    scale_sigma, tau = 2.0, 1.3
    raw = np.array([[0.2, -1.1], [0.7, 0.05]])
    with pm.Model() as model:
        HierarchicalNormal(scale_sigma=scale_sigma, noncentred=True)("w", (2, 2))
    logp = model.compile_logp()({"w_scale_log__": np.log(tau), "w_raw": raw})
    expected = (
        stats.halfnorm.logpdf(tau, scale=scale_sigma) + np.log(tau) + stats.norm.logpdf(raw).sum()
    )
    np.testing.assert_allclose(logp, expected, rtol=0, atol=LOGP_ATOL)


def test_network_weights_leaves_fixed_prior_draws_alone():
    rng = np.random.default_rng(0)
    draws = {name: rng.normal(size=(3, *shape)) for name, shape in SHAPES.items()}
    weights = network_weights(draws)
    assert list(weights) == WEIGHTS
    for name in WEIGHTS:
        assert weights[name] is draws[name]


def test_network_weights_scales_each_draw_of_raw_by_its_own_scale():
    rng = np.random.default_rng(1)
    n_draws = 5
    draws = {}
    for name, shape in SHAPES.items():
        draws[f"{name}_scale_log__"] = rng.normal(size=n_draws)
        draws[f"{name}_raw"] = rng.normal(size=(n_draws, *shape))
    weights = network_weights(draws)
    assert list(weights) == WEIGHTS
    for name in WEIGHTS:
        scale = np.exp(draws[f"{name}_scale_log__"])
        for draw in range(n_draws):
            np.testing.assert_allclose(
                weights[name][draw], draws[f"{name}_raw"][draw] * scale[draw], rtol=1e-14
            )


def test_network_weights_drops_the_scales_of_the_centred_prior():
    draws = {"output_b_scale_log__": np.zeros(2), "output_b": np.ones((2, 10))}
    assert list(network_weights(draws)) == ["output_b"]


def test_network_weights_names_a_missing_scale():
    with pytest.raises(KeyError, match="output_b_scale_log__"):
        network_weights({"output_b_raw": np.ones((2, 10))})


def equivalent_posteriors(seed=2):
    """A non-centred posterior with fixed scales and the centred one it implies.

    With the scale's sd at zero, raw ~ N(m, s) times tau is N(m tau, s tau):
    the centred factor. Keys are in the same order, so one seed draws the same
    standard normals for both.
    """
    rng = np.random.default_rng(seed)
    noncentred = Posterior({}, {}, meta={"model": SPEC.to_dict()})
    centred = Posterior({}, {}, meta={"model": SPEC.to_dict()})
    for name, shape in SHAPES.items():
        log_tau = rng.normal(-1.0, 0.3)
        mean, sd = rng.normal(size=shape), rng.uniform(0.1, 0.5, size=shape)
        for posterior in (noncentred, centred):
            posterior.means[f"{name}_scale_log__"] = np.asarray(log_tau)
            posterior.stds[f"{name}_scale_log__"] = np.asarray(0.0)
        noncentred.means[f"{name}_raw"], noncentred.stds[f"{name}_raw"] = mean, sd
        centred.means[name] = mean * np.exp(log_tau)
        centred.stds[name] = sd * np.exp(log_tau)
    return noncentred, centred


def test_noncentred_and_centred_posteriors_give_the_same_network_outputs():
    noncentred, centred = equivalent_posteriors()
    images = np.random.default_rng(3).random((6, 784))

    at_mean = class_probabilities(images, SPEC, noncentred.point())
    np.testing.assert_allclose(at_mean, class_probabilities(images, SPEC, centred.point()))

    samples = [
        sample_predictive(posterior, images, 7, np.random.default_rng(4), chunk_draws=3)
        for posterior in (noncentred, centred)
    ]
    np.testing.assert_allclose(samples[0].probabilities, samples[1].probabilities, rtol=1e-10)
    np.testing.assert_array_equal(samples[0].sampled_labels, samples[1].sampled_labels)


def test_noncentred_draw_chunks_are_raw_times_scale():
    noncentred, _ = equivalent_posteriors()
    noncentred.stds["output_W_scale_log__"] = np.asarray(0.2)
    (chunk,) = noncentred.draw_chunks(4, 4, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    direct = {
        name: mean + noncentred.stds[name] * rng.standard_normal((4, *mean.shape))
        for name, mean in noncentred.means.items()
    }
    assert sorted(chunk) == sorted(WEIGHTS)
    expected = direct["output_W_raw"] * np.exp(direct["output_W_scale_log__"])[:, None, None]
    np.testing.assert_allclose(chunk["output_W"], expected, rtol=1e-14)
    # Each draw has its own scale, so the draws' scales differ.
    ratios = chunk["output_W"][:, 0, 0] / direct["output_W_raw"][:, 0, 0]
    assert np.ptp(ratios) > 0


@pytest.mark.parametrize("noncentred", [False, True], ids=["centred", "noncentred"])
def test_short_fit_of_the_hier_prior_predicts(noncentred):
    settings = AdviSettings(n_iter=30, batch_size=16, float_dtype="float64")
    with pytensor.config.change_flags(floatX="float64"):
        model = tiny_model(HierarchicalNormal(noncentred=noncentred), n_images=48)
        result = fit_advi(model, settings, seed=0, progressbar=False)
        posterior = Posterior(result.means, result.stds, {"model": SPEC.to_dict()})
    assert np.all(np.isfinite(result.loss_history))
    weight_keys = [f"{n}_raw" for n in WEIGHTS] if noncentred else WEIGHTS
    scale_keys = [f"{n}_scale_log__" for n in WEIGHTS]
    assert sorted(posterior.means) == sorted(weight_keys + scale_keys)

    images = np.random.default_rng(6).random((5, 28, 28))
    samples = sample_predictive(posterior, images, 6, np.random.default_rng(7), chunk_draws=4)
    assert samples.probabilities.shape == (6, 5, 10)
    np.testing.assert_allclose(samples.probabilities.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(samples.probabilities >= 0)
    assert samples.sampled_labels.shape == (6, 5)
