"""The chunked posterior predictive against direct computations."""

import numpy as np
import pytest
from scipy import stats

import helpers_posterior
from bnn.evaluation import scoring
from bnn.predictive import chunked, forward
from bnn.predictive import posterior as posterior_io
from bnn.predictive.forward import class_probabilities
from bnn.predictive.posterior import Posterior


@pytest.fixture
def tiny_posterior():
    return helpers_posterior.tiny_posterior(seed=3, sd=0.05)


def test_zero_sd_gives_the_mean_network_for_every_draw(tiny_posterior):
    post = Posterior(
        tiny_posterior.means,
        {k: 0 * v for k, v in tiny_posterior.stds.items()},
        tiny_posterior.meta,
    )
    images = np.random.default_rng(0).random((7, 28, 28), dtype=np.float32)
    samples = chunked.sample_predictive(post, images, 5, np.random.default_rng(1), 2, 3)
    expected = class_probabilities(images, post.spec, post.point())[0]
    for draw in range(5):
        np.testing.assert_allclose(samples.probabilities[draw], expected, rtol=1e-5)


def test_one_chunk_equals_a_direct_draw(tiny_posterior):
    images = np.random.default_rng(0).random((9, 784), dtype=np.float32)
    samples = chunked.sample_predictive(
        tiny_posterior, images, 4, np.random.default_rng(5), chunk_draws=4, chunk_images=2
    )
    rng, _labels = np.random.default_rng(5).spawn(2)  # weights draw from the first stream
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
    labels = chunked.sample_categorical(probabilities, np.random.default_rng(0))
    counts = np.bincount(labels, minlength=10)
    assert counts[3:].sum() == 0
    assert stats.chisquare(counts[:3], 20000 * np.array([0.5, 0.3, 0.2])).pvalue > 0.001


def test_save_and_load_round_trip(tmp_path, tiny_posterior):
    images = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    summary = chunked.summarise_predictive(tiny_posterior, images, 4, np.random.default_rng(0))
    chunked.save(tmp_path / "ppc.npz", {"test": summary}, labels=np.array([1, 2, 3]))
    loaded, extra = chunked.load(tmp_path / "ppc.npz")
    for name in ("mean_probabilities", "expected_entropy", "vote_counts", "label_counts"):
        np.testing.assert_array_equal(getattr(loaded["test"], name), getattr(summary, name))
    assert loaded["test"].n_draws == 4
    assert extra["labels"].tolist() == [1, 2, 3]


def test_summary_reduces_the_same_draws(tiny_posterior):
    # Same seed, same chunks: the weight draws agree, so the reductions must too.
    images = np.random.default_rng(0).random((9, 784), dtype=np.float32)
    full = chunked.sample_predictive(tiny_posterior, images, 7, np.random.default_rng(2), 3, 4)
    summary = chunked.summarise_predictive(
        tiny_posterior, images, 7, np.random.default_rng(2), 3, 4
    )
    probabilities = full.probabilities.astype(np.float64)
    np.testing.assert_allclose(summary.mean_probabilities, probabilities.mean(0), rtol=1e-6)
    entropies = -(probabilities * np.log(probabilities)).sum(-1)
    np.testing.assert_allclose(summary.expected_entropy, entropies.mean(0), rtol=1e-5)
    votes = np.stack([np.bincount(d, minlength=10) for d in probabilities.argmax(-1).T])
    np.testing.assert_array_equal(summary.vote_counts, votes)
    assert (summary.label_counts.sum(axis=1) == 7).all()


def test_summary_memory_does_not_grow_with_draws(tiny_posterior):
    # The reductions are per image; the draws only pass through, a chunk at a time.
    images = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    few = chunked.summarise_predictive(tiny_posterior, images, 2, np.random.default_rng(0))
    many = chunked.summarise_predictive(tiny_posterior, images, 300, np.random.default_rng(0))
    assert few.mean_probabilities.shape == many.mean_probabilities.shape == (5, 10)
    assert many.label_counts.sum() == 300 * 5


def test_point_estimate_is_evaluated_once_and_labels_follow_it(tiny_posterior):
    point = Posterior(
        tiny_posterior.means,
        {k: np.zeros_like(v) for k, v in tiny_posterior.stds.items()},
        tiny_posterior.meta,
    )
    assert point.is_point_estimate and not tiny_posterior.is_point_estimate
    images = np.random.default_rng(0).random((4, 784), dtype=np.float32)
    summary = chunked.summarise_predictive(point, images, 20000, np.random.default_rng(1))
    expected = class_probabilities(images, point.spec, point.point())[0]
    np.testing.assert_allclose(summary.mean_probabilities, expected, rtol=1e-5)
    np.testing.assert_allclose(
        summary.expected_entropy, -(expected * np.log(expected)).sum(-1), rtol=1e-5
    )
    assert (summary.vote_counts.max(axis=1) == 20000).all()
    np.testing.assert_allclose(summary.label_counts / 20000, expected, atol=0.02)


def test_posterior_round_trip_without_pickle(tmp_path, tiny_posterior):
    posterior_io.save(tiny_posterior, tmp_path)
    loaded = posterior_io.load(tmp_path)
    assert loaded.meta == tiny_posterior.meta
    for name in tiny_posterior.means:
        np.testing.assert_array_equal(loaded.means[name], tiny_posterior.means[name])
        np.testing.assert_array_equal(loaded.stds[name], tiny_posterior.stds[name])
    with np.load(tmp_path / posterior_io.ARRAYS_FILE, allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)


def test_point_estimate_has_exactly_zero_mutual_information(tiny_posterior):
    point = Posterior(
        tiny_posterior.means,
        {k: np.zeros_like(v) for k, v in tiny_posterior.stds.items()},
        tiny_posterior.meta,
    )
    images = np.random.default_rng(0).random((6, 784), dtype=np.float32)
    summary = chunked.summarise_predictive(point, images, 50, np.random.default_rng(1))
    scores = scoring.scores_of(summary)
    assert (scores["mutual_info"] == 0).all()


@pytest.mark.parametrize("network", ["dense", "conv"])
def test_blocks_are_the_same_bits_whatever_the_number_of_workers(network):
    # Each block is one thread's forward pass with one BLAS thread, and the weights
    # are drawn in order in the caller: the worker count cannot change a bit.
    post = helpers_posterior.tiny_posterior(seed=3, sd=0.05, network=network)
    images = np.random.default_rng(0).random((11, 784), dtype=np.float32)

    def blocks(workers):
        chunks = chunked.probability_chunks(
            post, images, 7, np.random.default_rng(2), 3, 4, workers=workers
        )
        return [(draws, rows, block) for draws, rows, block in chunks]

    one, three = blocks(1), blocks(3)
    assert [(d, r) for d, r, _ in one] == [(d, r) for d, r, _ in three]
    assert len(one) == 3 * 3  # 7 draws in 3 chunks x 11 images in 3 chunks
    for (_, _, expected), (_, _, got) in zip(one, three, strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("network", ["dense", "conv"])
def test_a_pass_of_several_chunks_yields_each_chunks_own_block(network, monkeypatch):
    # How many chunks one forward pass takes is a matter of speed: the blocks the
    # caller sees, their order and their probabilities stay each chunk's own. A
    # GEMM may sum a row in another order for another number of rows, so the
    # probabilities agree to float32 rounding, not bit for bit.
    post = helpers_posterior.tiny_posterior(seed=3, sd=0.05, network=network)
    images = np.random.default_rng(0).random((11, 784), dtype=np.float32)

    def blocks(chunks_per_pass):
        chunk_bytes = post.spec.widest_output * 3 * 4 * 4  # 3 draws x 4 images of float32
        monkeypatch.setitem(forward.PASS_BYTES, network, chunks_per_pass * chunk_bytes)
        assert forward.chunks_per_pass(post.spec, 3, 4) == chunks_per_pass
        return list(chunked.probability_chunks(post, images, 7, np.random.default_rng(2), 3, 4))

    one, several = blocks(1), blocks(2)
    assert [(d, r) for d, r, _ in several] == [(d, r) for d, r, _ in one]
    assert len(one) == 3 * 3  # 7 draws in 3 chunks x 11 images in 3 chunks
    for (_, _, expected), (_, _, got) in zip(one, several, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
