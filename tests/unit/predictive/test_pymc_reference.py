"""Our NumPy posterior predictive against PyMC's sample_posterior_predictive."""

import numpy as np
import pytensor
import pytest

from bnn.model.pymc_model import bnn_model
from bnn.model.specs import ConvSpec, DenseSpec
from bnn.pipeline.config import prior_family
from bnn.predictive import chunked, pymc_reference
from bnn.predictive.posterior import Posterior

N_DRAWS = 3000


def spread_posterior(spec, prior_settings: dict, seed: int) -> Posterior:
    """A posterior with real spread over every variable of the model, in float64."""
    rng = np.random.default_rng(seed)
    images = rng.random((20, 784))
    with pytensor.config.change_flags(floatX="float64"):
        model = bnn_model(images, rng.integers(0, 10, 20), spec, prior_family(prior_settings), 10)
        names = model.initial_point()
    means = {name: rng.normal(scale=0.8, size=value.shape) for name, value in names.items()}
    stds = {name: np.full(value.shape, 0.4) for name, value in names.items()}
    meta = {"model": spec.to_dict(), "prior": prior_settings, "float_dtype": "float64"}
    return Posterior(means=means, stds=stds, meta=meta)


def label_frequencies(labels: np.ndarray) -> np.ndarray:
    """(images, classes) frequencies of sampled labels of shape (draws, images)."""
    return np.stack([np.bincount(column, minlength=10) for column in labels.T]) / len(labels)


def ours(posterior: Posterior, images: np.ndarray) -> np.ndarray:
    samples = chunked.sample_predictive(posterior, images, N_DRAWS, np.random.default_rng(1))
    return label_frequencies(samples.sampled_labels)


def pymcs(posterior: Posterior, images: np.ndarray) -> np.ndarray:
    return label_frequencies(pymc_reference.sample_labels(posterior, images, N_DRAWS, 2))


@pytest.mark.parametrize(
    ("spec", "prior_settings"),
    [
        (DenseSpec(n_hidden=(3,)), {"family": "fixed", "sigma": 1.0}),
        (DenseSpec(n_hidden=(3,)), {"family": "hier", "scale_sigma": 1.0, "noncentred": False}),
        (DenseSpec(n_hidden=(3,)), {"family": "hier", "scale_sigma": 1.0, "noncentred": True}),
        (ConvSpec(n_filters=(2,), n_hidden=(3,)), {"family": "fixed", "sigma": 1.0}),
    ],
    ids=["dense-fixed", "dense-hier", "dense-hier-noncentred", "conv-fixed"],
)
def test_label_distribution_matches_pymc(spec, prior_settings):
    posterior = spread_posterior(spec, prior_settings, seed=0)
    images = np.random.default_rng(3).random((4, 784))
    expected = pymcs(posterior, images)
    # Three standard errors of a difference of two frequencies at p = 0.5 is about 0.04.
    np.testing.assert_allclose(ours(posterior, images), expected, atol=0.05)
    # The check has power: a different posterior is told apart.
    other = spread_posterior(spec, prior_settings, seed=5)
    assert np.abs(ours(other, images) - expected).max() > 0.1


def test_unconstrained_scales_come_back_exponentiated():
    posterior = Posterior(
        means={"w_scale_log__": np.array(np.log(2.0)), "w": np.zeros(3)},
        stds={"w_scale_log__": np.array(0.0), "w": np.ones(3)},
    )
    dataset = pymc_reference.posterior_dataset(posterior, 5, np.random.default_rng(0))
    assert set(dataset.data_vars) == {"w_scale", "w"}
    np.testing.assert_allclose(dataset["w_scale"].values, 2.0)
    assert dataset["w"].shape == (1, 5, 3)
