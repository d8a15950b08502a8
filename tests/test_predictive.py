"""The chunked posterior predictive against direct computations."""

import numpy as np
import pytest
from scipy import stats

from bnn import posterior as posterior_io
from bnn import predictive
from bnn.forward import class_probabilities
from bnn.networks import DenseSpec
from bnn.posterior import Posterior


@pytest.fixture
def tiny_posterior():
    rng = np.random.default_rng(3)
    spec = DenseSpec(n_hidden=(6,))
    sizes = spec.layer_sizes
    means, stds = {}, {}
    for index, name in enumerate(spec.layer_names):
        for part, shape in (("W", (sizes[index], sizes[index + 1])), ("b", (sizes[index + 1],))):
            means[f"{name}_{part}"] = (rng.normal(size=shape) * 0.2).astype(np.float32)
            stds[f"{name}_{part}"] = np.full(shape, 0.05, np.float32)
    return Posterior(means, stds, meta={"model": spec.to_dict()})


def test_zero_sd_gives_the_mean_network_for_every_draw(tiny_posterior):
    post = Posterior(
        tiny_posterior.means,
        {k: 0 * v for k, v in tiny_posterior.stds.items()},
        tiny_posterior.meta,
    )
    images = np.random.default_rng(0).random((7, 28, 28), dtype=np.float32)
    samples = predictive.sample_predictive(post, images, 5, np.random.default_rng(1), 2, 3)
    expected = class_probabilities(images, post.spec, post.point())[0]
    for draw in range(5):
        np.testing.assert_allclose(samples.probabilities[draw], expected, rtol=1e-5)


def test_one_chunk_equals_a_direct_draw(tiny_posterior):
    images = np.random.default_rng(0).random((9, 784), dtype=np.float32)
    samples = predictive.sample_predictive(
        tiny_posterior, images, 4, np.random.default_rng(5), chunk_draws=4, chunk_images=2
    )
    rng = np.random.default_rng(5)
    weights = {
        name: mean + tiny_posterior.stds[name] * rng.standard_normal((4, *mean.shape), mean.dtype)
        for name, mean in tiny_posterior.means.items()
    }
    expected = class_probabilities(images, tiny_posterior.spec, weights)
    np.testing.assert_allclose(samples.probabilities, expected, rtol=1e-5)


def test_weight_draws_have_the_posterior_moments(tiny_posterior):
    draws = np.concatenate(
        [
            chunk["output_b"]
            for chunk in tiny_posterior.draw_chunks(4000, 300, np.random.default_rng(2))
        ]
    )
    assert draws.shape == (4000, 10)
    np.testing.assert_allclose(draws.mean(0), tiny_posterior.means["output_b"], atol=0.005)
    np.testing.assert_allclose(draws.std(0), tiny_posterior.stds["output_b"], rtol=0.06)


def test_sampled_labels_follow_the_probabilities():
    probabilities = np.tile(np.array([0.5, 0.3, 0.2] + [0.0] * 7), (20000, 1))
    labels = predictive.sample_categorical(probabilities, np.random.default_rng(0))
    counts = np.bincount(labels, minlength=10)
    assert counts[3:].sum() == 0
    assert stats.chisquare(counts[:3], 20000 * np.array([0.5, 0.3, 0.2])).pvalue > 0.001


def test_save_and_load_round_trip(tmp_path, tiny_posterior):
    images = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    samples = predictive.sample_predictive(tiny_posterior, images, 2, np.random.default_rng(0))
    predictive.save(samples, np.array([1, 2, 3]), tmp_path / "ppc.npz")
    loaded, labels = predictive.load(tmp_path / "ppc.npz")
    np.testing.assert_array_equal(loaded.probabilities, samples.probabilities)
    np.testing.assert_array_equal(loaded.sampled_labels, samples.sampled_labels)
    assert labels.tolist() == [1, 2, 3]


def test_posterior_round_trip_without_pickle(tmp_path, tiny_posterior):
    posterior_io.save(tiny_posterior, tmp_path)
    loaded = posterior_io.load(tmp_path)
    assert loaded.meta == tiny_posterior.meta
    for name in tiny_posterior.means:
        np.testing.assert_array_equal(loaded.means[name], tiny_posterior.means[name])
        np.testing.assert_array_equal(loaded.stds[name], tiny_posterior.stds[name])
    with np.load(tmp_path / posterior_io.ARRAYS_FILE, allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)
