"""ADVI fitting: closed-form posterior, reproducibility, schedule and starting point."""

import math

import numpy as np
import pymc as pm
import pytest

from bnn.data.dataset import LabelledImages
from bnn.inference.fitting import fit_posterior
from bnn.inference.pymc_engine import fit_advi, initial_means
from bnn.inference.settings import (
    MAP_SIGMA,
    AdviSettings,
    DivergedError,
    elbo_curve,
    learning_rate_at,
)
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import DenseSpec


def test_fit_recovers_the_conjugate_normal_posterior():
    # y_i ~ N(mu, 1), mu ~ N(0, 1): the posterior is N(sum(y)/(n+1), 1/(n+1)), which is
    # in the mean-field family, so ADVI should find it up to optimisation noise.
    y = np.random.default_rng(0).normal(1.5, 1.0, size=40)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        pm.Normal("y", mu, 1.0, observed=y)
    settings = AdviSettings(
        n_iter=6000,
        learning_rate=0.02,
        lr_final_fraction=0.01,
        float_dtype="float64",
        start_sigma=0.5,
    )
    result = fit_advi(model, settings, seed=1, progressbar=False)
    fitted = result
    n = len(y)
    assert fitted.means["mu"] == pytest.approx(y.sum() / (n + 1), abs=0.02)
    assert fitted.stds["mu"] == pytest.approx(1 / math.sqrt(n + 1), rel=0.1)


def tiny_bnn(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((60, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 60)
    return bnn_model(images, labels, DenseSpec(n_hidden=(4,)), FixedNormal(1.0), batch_size=16)


def test_same_seed_same_posterior_and_history():
    settings = AdviSettings(n_iter=30, batch_size=16, float_dtype="float64")
    runs = [fit_advi(tiny_bnn(), settings, seed=7, progressbar=False) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].loss_history, runs[1].loss_history)
    for name, mean in runs[0].means.items():
        np.testing.assert_array_equal(mean, runs[1].means[name])
    other = fit_advi(tiny_bnn(), settings, seed=8, progressbar=False)
    assert not np.array_equal(other.loss_history, runs[0].loss_history)


def test_divergence_is_one_error_naming_the_variable():
    # Plain SGD at an absurd step size overflows within a few steps.
    settings = AdviSettings(
        n_iter=50, batch_size=16, optimizer="sgd", learning_rate=1e30, float_dtype="float64"
    )
    with pytest.raises(
        DivergedError, match=r"ADVI diverged: .*RV `\w+`.* inference\.learning_rate"
    ):
        fit_advi(tiny_bnn(), settings, seed=0, progressbar=False)


def test_initial_means_are_glorot_scaled_and_biases_zero():
    start = initial_means(tiny_bnn(), "glorot", 1.0, np.random.default_rng(0))
    assert start["hidden1_W"].shape == (784, 4)
    assert start["hidden1_W"].std() == pytest.approx(1 / math.sqrt(784), rel=0.1)
    assert not start["output_b"].any()
    original = initial_means(tiny_bnn(), "normal", 1.0, np.random.default_rng(0))
    assert original["hidden1_W"].std() == pytest.approx(1.0, rel=0.1)


def test_cosine_schedule_runs_from_rate_to_floor():
    settings = AdviSettings(n_iter=101, learning_rate=0.01, lr_final_fraction=0.1)
    assert learning_rate_at(0, settings) == pytest.approx(0.01)
    assert learning_rate_at(50, settings) == pytest.approx(0.0055)
    assert learning_rate_at(100, settings) == pytest.approx(0.001)
    flat = AdviSettings(lr_decay="none", learning_rate=0.01)
    assert learning_rate_at(500, flat) == 0.01


def test_elbo_curve_averages_windows():
    steps, values = elbo_curve(np.arange(1.0, 11.0), n_points=4)
    assert steps.tolist() == [3, 6, 9, 10]
    assert values.tolist() == [2.0, 5.0, 8.0, 10.0]
    steps, values = elbo_curve(np.arange(5.0), n_points=100)
    assert steps.tolist() == [1, 2, 3, 4, 5]


def test_map_finds_the_posterior_mode_and_keeps_the_sd_frozen():
    # The conjugate model again: its posterior mode is sum(y) / (n + 1).
    y = np.random.default_rng(0).normal(1.5, 1.0, size=40)
    with pm.Model() as model:
        mu = pm.Normal("mu", 0.0, 1.0)
        pm.Normal("y", mu, 1.0, observed=y)
    settings = AdviSettings(
        method="map", n_iter=3000, learning_rate=0.02, lr_final_fraction=0.01, float_dtype="float64"
    )
    result = fit_advi(model, settings, seed=1, progressbar=False)
    fitted = result
    assert fitted.means["mu"] == pytest.approx(y.sum() / (len(y) + 1), abs=1e-3)
    np.testing.assert_allclose(fitted.stds["mu"], MAP_SIGMA, rtol=1e-6)


def test_map_posterior_is_a_point_estimate():
    rng = np.random.default_rng(0)
    train = LabelledImages(rng.random((60, 784), dtype=np.float32), rng.integers(0, 10, 60))
    settings = AdviSettings(method="map", n_iter=5, batch_size=20)
    fitted, _ = fit_posterior(
        train, DenseSpec(n_hidden=(4,)), FixedNormal(1.0), settings, 0, {}, progressbar=False
    )
    assert fitted.is_point_estimate and fitted.meta.inference_method == "map"
    assert all(np.any(mean) for name, mean in fitted.means.items() if name.endswith("_W"))
