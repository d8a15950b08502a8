"""The convolutional network: im2col layers against loop references and finite differences."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.core.errors import ConfigError
from bnn.model import layers
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.specs import ConvSpec
from bnn.predictive import forward


def conv_loop(images, kernel, bias):
    """One output pixel at a time: the definition of a 'valid' cross-correlation."""
    n, h, w, _ = images.shape
    k, _, _, c_out = kernel.shape
    out = np.zeros((n, h - k + 1, w - k + 1, c_out))
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            window = images[:, i : i + k, j : j + k, :]
            out[:, i, j, :] = np.einsum("nabc,abcd->nd", window, kernel) + bias
    return out


def pool_loop(images, size):
    n, h, w, c = images.shape
    out = np.empty((n, h // size, w // size, c))
    for i in range(h // size):
        for j in range(w // size):
            out[:, i, j] = images[:, i * size : (i + 1) * size, j * size : (j + 1) * size].max(
                axis=(1, 2)
            )
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_numpy_conv_matches_loop_for_every_draw(rng):
    images = rng.normal(size=(3, 9, 8, 2))
    kernel = rng.normal(size=(4, 3, 3, 2, 5))
    bias = rng.normal(size=(4, 5))
    got = forward.conv2d(images[None], kernel, bias)
    assert got.shape == (4, 3, 7, 6, 5)
    for draw in range(4):
        np.testing.assert_allclose(got[draw], conv_loop(images, kernel[draw], bias[draw]))


def test_numpy_conv_of_per_draw_inputs_matches_loop(rng):
    # Deeper layers get one input per draw: the batched GEMM path, not the folded one.
    images = rng.normal(size=(4, 3, 9, 8, 2))
    kernel = rng.normal(size=(4, 3, 3, 2, 5))
    bias = rng.normal(size=(4, 5))
    got = forward.conv2d(images, kernel, bias)
    for draw in range(4):
        np.testing.assert_allclose(got[draw], conv_loop(images[draw], kernel[draw], bias[draw]))


@pytest.mark.parametrize("lead", [1, 3])
def test_pool_then_bias_then_tanh_equals_conv_tanh_pool(rng, lead):
    # The forward pass reorders each block; tanh is increasing and the bias is
    # constant over a window, so the result must not change.
    images = rng.normal(size=(lead, 2, 10, 10, 2))  # 9x9 maps, 3x3 pools
    kernel = rng.normal(size=(3, 2, 2, 2, 4))
    bias = rng.normal(size=(3, 4))
    # a strided bias (a view of a wider array) is taken as it is
    wide_bias = np.repeat(bias, 2, axis=1)
    got = np.tanh(forward.convolve_pool(images, kernel, wide_bias[:, ::2], pool_size=3))
    for draw in range(3):
        draw_images = images[draw if lead > 1 else 0]
        expected = pool_loop(np.tanh(conv_loop(draw_images, kernel[draw], bias[draw])), 3)
        np.testing.assert_allclose(got[draw], expected, rtol=1e-12)


@pytest.mark.parametrize("lead", [1, 4])
def test_conv_blocks_of_one_image_equal_one_block(rng, monkeypatch, lead):
    # Blocks only change which images share a GEMM call: each output row is the
    # same dot product, so the results are equal, not just close.
    images = rng.normal(size=(lead, 5, 12, 12, 3)).astype(np.float32)
    kernel = rng.normal(size=(4, 5, 5, 3, 6)).astype(np.float32)
    bias = rng.normal(size=(4, 6)).astype(np.float32)
    whole = forward.convolve_pool(images, kernel, bias, pool_size=2)
    monkeypatch.setattr(forward, "MAP_BLOCK_BYTES", 1)
    blocked = forward.convolve_pool(images, kernel, bias, pool_size=2)
    assert whole.dtype == np.float32 and whole.shape == (4, 5, 4, 4, 6)
    np.testing.assert_allclose(blocked, whole, rtol=2e-6, atol=2e-6)
    for draw in range(4):
        expected = pool_loop(
            conv_loop(images[draw if lead > 1 else 0], kernel[draw], bias[draw]), 2
        )
        # float32 sums of 75 products of unit normals: a few float32 ulps of their size
        np.testing.assert_allclose(whole[draw], expected, rtol=1e-5, atol=1e-5)


def test_conv_pool_keeps_nan_as_np_maximum_does(rng):
    # A NaN pixel in a corner reaches one map pixel, so one pooled pixel of every
    # channel and draw: a diverged draw shows in the output instead of vanishing.
    images = rng.normal(size=(1, 2, 6, 6, 1))
    images[0, 1, 0, 0, 0] = np.nan
    kernel, bias = rng.normal(size=(2, 3, 3, 1, 2)), rng.normal(size=(2, 2))
    pooled = forward.convolve_pool(images, kernel, bias, pool_size=2)
    expected = np.zeros(pooled.shape, bool)
    expected[:, 1, 0, 0, :] = True
    np.testing.assert_array_equal(np.isnan(pooled), expected)


def test_pytensor_conv_layer_matches_loop(rng):
    images = rng.normal(size=(3, 9, 8, 2))
    kernel, bias = rng.normal(size=(3, 3, 2, 5)), rng.normal(size=5)
    with pm.Model() as model:
        inputs = pt.tensor4("images")
        outputs = layers.conv2d("c", inputs, (9, 8, 2), 5, 3, FixedNormal(1.0))
        pooled = layers.max_pool(outputs, (7, 6, 5), 1)
    evaluate = pytensor.function([inputs, *model.free_RVs], [outputs, pooled])
    got, same = evaluate(images, kernel, bias)
    np.testing.assert_allclose(got, conv_loop(images, kernel, bias), rtol=1e-10)
    np.testing.assert_allclose(same, got)


def test_pytensor_pool_matches_loop(rng):
    images = rng.normal(size=(2, 8, 6, 3))
    inputs = pt.tensor4("images")
    got = pytensor.function([inputs], layers.max_pool(inputs, (8, 6, 3), 2))(images)
    np.testing.assert_allclose(got, pool_loop(images, 2))


def test_conv_gradient_matches_finite_differences(rng):
    images = rng.normal(size=(2, 6, 6, 2))

    def conv_then_pool(kernel, bias):
        def prior(name, shape):
            return kernel if name.endswith("_W") else bias

        outputs = layers.conv2d("c", pt.as_tensor(images), (6, 6, 2), 3, 3, prior, "tanh")
        return layers.max_pool(outputs, (4, 4, 3), 2)

    pytensor.gradient.verify_grad(
        conv_then_pool,
        [rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3)],
        rng=rng,
        abs_tol=1e-6,
        rel_tol=1e-5,
    )


def test_conv_network_graph_matches_numpy_forward(rng):
    spec = ConvSpec(n_filters=(3, 4), n_hidden=(6,))
    with pm.Model() as model:
        inputs = pt.matrix("images")
        logits = build_network(inputs, spec, FixedNormal(1.0))
    names = [rv.name for rv in model.free_RVs]
    assert names == [
        "conv1_W",
        "conv1_b",
        "conv2_W",
        "conv2_b",
        "hidden1_W",
        "hidden1_b",
        "output_W",
        "output_b",
    ]
    weights = {rv.name: rng.normal(size=(2, *rv.type.shape)) * 0.3 for rv in model.free_RVs}
    images = rng.random((5, 784))
    expected = forward.conv_logits(images, spec, weights)
    evaluate = pytensor.function([inputs, *model.free_RVs], logits)
    for draw in range(2):
        got = evaluate(images, *(weights[name][draw] for name in names))
        np.testing.assert_allclose(got, expected[draw], rtol=1e-8)


def test_default_conv_spec_is_the_2016_cnn():
    spec = ConvSpec()
    assert [shapes[2] for shapes in spec.conv_shapes] == [(12, 12, 32), (4, 4, 32)]
    assert spec.dense_sizes == [512, 256, 10]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(n_filters=(32, 32, 32)), "layer conv3 gets 4x4 feature maps, smaller than its 5x5"),
        (dict(kernel_size=4), "layer conv1 outputs 25x25 maps, not divisible by model.pool_size=2"),
    ],
)
def test_shapes_that_do_not_fit_name_the_layer(spec, message):
    with pytest.raises(ConfigError, match=message):
        ConvSpec(**spec)
