"""The PyMC model's likelihood: exact, stable in float32, and sampleable."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.special import log_softmax

from bnn.model import pymc_model as bnn_model_module
from bnn.model.priors import FixedNormal
from bnn.model.specs import DenseSpec


def logp_values(value: np.ndarray, logits: np.ndarray, dtype: str) -> np.ndarray:
    value_var, logits_var = pt.vector("value", dtype="int32"), pt.matrix("logits", dtype=dtype)
    logp = bnn_model_module.categorical_logit_logp(value_var, logits_var)
    return pytensor.function([value_var, logits_var], logp)(value, logits.astype(dtype))


def test_logp_is_log_softmax_at_the_label():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 10)), rng.integers(0, 10, size=6).astype("int32")
    expected = log_softmax(logits, axis=-1)[np.arange(6), labels]
    np.testing.assert_allclose(logp_values(labels, logits, "float64"), expected, rtol=1e-12)


def test_logp_stays_finite_in_float32_where_softmax_underflows():
    # Logit gaps of hundreds: softmax underflows to exactly 0 in float32.
    logits = np.array([[400.0, 0.0, -300.0], [0.0, 250.0, 0.0]])
    labels = np.array([2, 0], dtype="int32")
    assert (pt.special.softmax(logits.astype("float32"), axis=-1).eval() == 0).any()
    got = logp_values(labels, logits, "float32")
    np.testing.assert_allclose(got, [-700.0, -250.0], rtol=1e-6)


def test_model_logp_matches_a_hand_computed_minibatch_likelihood():
    rng = np.random.default_rng(2)
    # Eight copies of one image, so any minibatch of 4 holds the same pairs;
    # total_size must scale its log-likelihood by 8 / 4.
    image, label = rng.uniform(size=784), 7
    images, labels = np.tile(image, (8, 1)), np.full(8, label)
    spec = DenseSpec(n_hidden=())
    with pytensor.config.change_flags(floatX="float64"):
        model = bnn_model_module.bnn_model(images, labels, spec, FixedNormal(1.0), batch_size=4)
        point = model.initial_point()
        weights = rng.normal(scale=0.05, size=(784, 10))
        point["output_W"], point["output_b"] = weights, np.zeros(10)
        # The Python linker: Numba would warn that it runs Minibatch in object mode.
        label_logp = model.compile_fn(
            model.logp(vars=model.observed_RVs, sum=True), mode="FAST_COMPILE"
        )(point)
    expected = 8 * log_softmax(image @ weights)[label]
    assert label_logp == pytest.approx(expected, rel=1e-9)


def test_prior_predictive_labels_come_from_the_network():
    rng = np.random.default_rng(3)
    images, labels = rng.uniform(size=(50, 784)), rng.integers(0, 10, size=50)
    spec = DenseSpec(n_hidden=())
    with pytensor.config.change_flags(floatX="float64"):
        model = bnn_model_module.bnn_model(images, labels, spec, FixedNormal(1.0), batch_size=10)
        with model:
            draws = pm.sample_prior_predictive(
                draws=20, random_seed=4, compile_kwargs={"mode": "FAST_COMPILE"}
            )
    sampled = draws.prior_predictive["label"].values
    assert sampled.shape == (1, 20, 10)
    assert set(np.unique(sampled)) <= set(range(10))


def test_float32_logp_and_gradient_match_float64():
    # Identical rows, so every minibatch is the same whatever indices it draws.
    rng = np.random.default_rng(5)
    images, labels = np.tile(rng.uniform(size=784), (40, 1)), np.full(40, 3)
    spec = DenseSpec(n_hidden=(6,))
    results = {}
    for dtype in ("float64", "float32"):
        with pytensor.config.change_flags(floatX=dtype):
            model = bnn_model_module.bnn_model(images, labels, spec, FixedNormal(1.0), 40)
            point_rng = np.random.default_rng(6)  # the same point in both dtypes
            point = {
                name: (point_rng.normal(scale=0.1, size=value.shape)).astype(dtype)
                for name, value in model.initial_point().items()
            }
            logp = model.compile_logp(mode="FAST_COMPILE")(point)
            gradient = model.compile_dlogp(mode="FAST_COMPILE")(point)
        results[dtype] = (float(logp), np.asarray(gradient, dtype=np.float64))
    assert results["float32"][0] == pytest.approx(results["float64"][0], rel=1e-5)
    np.testing.assert_allclose(results["float32"][1], results["float64"][1], rtol=1e-3, atol=1e-3)
