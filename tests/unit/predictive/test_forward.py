"""The PyTensor network graph and the NumPy forward pass compute the same function."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.specs import ConvSpec, DenseSpec
from bnn.predictive import forward
from bnn.predictive.forward import class_probabilities, dense_logits, softmax


def numpy_reference(images, weights, n_layers):
    """A plain loop: one image, one draw, one layer at a time."""
    draws = weights["output_W"].shape[0]
    out = np.empty((draws, len(images), 10))
    for d in range(draws):
        for i, image in enumerate(images):
            h = image.astype(np.float64)
            for name in [f"hidden{k + 1}" for k in range(n_layers - 1)] + ["output"]:
                h = h @ weights[f"{name}_W"][d] + weights[f"{name}_b"][d]
                if name != "output":
                    h = np.tanh(h)
            out[d, i] = h
    return out


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    spec = DenseSpec(n_hidden=(7, 5))
    sizes = spec.layer_sizes
    weights = {}
    for index, name in enumerate(spec.layer_names):
        weights[f"{name}_W"] = rng.normal(size=(3, sizes[index], sizes[index + 1])) * 0.3
        weights[f"{name}_b"] = rng.normal(size=(3, sizes[index + 1])) * 0.3
    images = rng.random((4, 784))
    return spec, weights, images


def test_numpy_forward_matches_loop_reference(tiny):
    spec, weights, images = tiny
    np.testing.assert_allclose(
        dense_logits(images, spec, weights), numpy_reference(images, weights, 3), rtol=1e-10
    )


def test_pytensor_graph_matches_numpy_forward(tiny):
    spec, weights, images = tiny
    with pm.Model() as model:
        inputs = pt.matrix("images")
        logits = build_network(inputs, spec, FixedNormal(sigma=1.0))
    names = [rv.name for rv in model.free_RVs]
    assert names == [f"{layer}_{part}" for layer in spec.layer_names for part in "Wb"]
    evaluate = pytensor.function([inputs, *model.free_RVs], logits)
    draw = 1
    got = evaluate(images, *(weights[name][draw] for name in names))
    np.testing.assert_allclose(got, dense_logits(images, spec, weights)[draw], rtol=1e-10)


def test_class_probabilities_are_softmax_and_accept_image_shape(tiny):
    spec, weights, images = tiny
    probabilities = class_probabilities(images.reshape(4, 28, 28), spec, weights)
    assert probabilities.shape == (3, 4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0)
    np.testing.assert_allclose(probabilities, softmax(dense_logits(images, spec, weights)))


def test_softmax_is_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(softmax(logits), [[1.0, 0.0, 0.0]])


def test_chunks_fit_the_widest_layer_into_the_cache_budget():
    # Dense: 800 units x 10 draws x 4 bytes = 32 KB per image; conv: the pooled
    # 12x12x32 maps of its first block (its 24x24x32 maps are made a block at a time).
    assert DenseSpec().widest_output == 800
    assert ConvSpec().widest_output == 12 * 12 * 32
    assert forward.images_per_chunk(DenseSpec(), 10) == forward.CHUNK_BYTES // (800 * 10 * 4)
    assert forward.images_per_chunk(ConvSpec(), 10) == forward.CHUNK_BYTES // (4608 * 10 * 4)
    assert forward.images_per_chunk(ConvSpec(), 10**6) == 1


def test_a_conv_pass_takes_four_chunks_and_a_dense_pass_one():
    # The committed dense results were made one cache-sized chunk per pass.
    for spec, chunks in ((DenseSpec(), 1), (ConvSpec(), 4)):
        chunk_images = forward.images_per_chunk(spec, 10)
        assert forward.chunks_per_pass(spec, 10, chunk_images) == chunks
    assert forward.chunks_per_pass(ConvSpec(), 10, 1) == forward.PASS_BYTES["conv"] // (4608 * 40)
    assert forward.chunks_per_pass(ConvSpec(), 10**6, 1) == 1
