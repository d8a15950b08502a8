"""The fused conv blocks (conv, bias, max-pool) against the model's graph."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.core.threads import cores_for_blocks
from bnn.inference.logp_gradient import (
    FAST_CPU_MODE,
    compile_logp_gradient,
    flat_logp,
    runs_in_blocks,
)
from bnn.model import conv_ops, conv_pool_ops, direct_conv
from bnn.model.conv_ops import Conv2dValid, ConvGraph, MaxPool2d, PoolGraph
from bnn.model.conv_pool_ops import ConvBiasPool, ConvBiasPoolGrad, ConvBiasPoolImageGrad
from bnn.model.layers import convolve, max_pool
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import label_variable
from bnn.model.specs import ConvSpec, DenseSpec


def tied_arrays(channels: int, rng: np.random.Generator):
    """Images that are mostly 0, and small integers: many windows have tied maxima."""
    # Fewer nonzero pixels where sums over many channels would break the ties.
    nonzero = 0.4 if channels <= 3 else 0.05
    images = rng.integers(0, 3, size=(5, 11, 9, channels)) * (rng.random((5, 11, 9, 1)) < nonzero)
    kernel = rng.integers(-1, 2, size=(4, 4, channels, 6))
    bias = rng.integers(-1, 2, size=6)
    return images.astype("float64"), kernel.astype("float64"), bias.astype("float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"], ids=["im2col", "float32 direct"])
@pytest.mark.parametrize(
    "channels",
    [1, 3, 16],
    ids=["1 channel (tap matrix)", "3 channels (patches)", "16 channels (walking the maxima)"],
)
def test_values_and_gradients_equal_the_graph_with_ties(channels, dtype, monkeypatch):
    rng = np.random.default_rng(0)
    images, kernel, bias = (array.astype(dtype) for array in tied_arrays(channels, rng))
    # float32 maps are the C direct convolution's; on these small integers every
    # sum is exact either way, so the ties are the same ties as the graph's
    assert direct_conv.available() and conv_pool_ops._direct(images) == (dtype == "float32")
    tolerance = 1e-12 if dtype == "float64" else 1e-5  # the weights below are not integers
    assert conv_pool_ops.walks_maxima(4, channels) == (channels == 16)
    # Blocks of two images: the blocked loops and the sums over blocks are exercised.
    item = images.itemsize
    two_images = 2 * (8 * 6 * 16 * channels + 8 * 6 * 6) * item
    monkeypatch.setattr(conv_ops, "BLOCK_BYTES", two_images)
    monkeypatch.setattr(conv_ops, "CACHE_BLOCK_BYTES", 2 * 11 * 9 * channels * item)
    assert len(conv_pool_ops._image_blocks(images, 4, 6)) == 3
    assert len(conv_pool_ops._gradient_blocks(images.shape, item)) == 3
    x, w, b = pt.tensor4(dtype=dtype), pt.tensor4(dtype=dtype), pt.vector(dtype=dtype)
    weights = pt.as_tensor_variable(rng.normal(size=(5, 4, 3, 6)).astype(dtype))
    ours = (ConvBiasPool(2)(x, w, b)[0] * weights).sum()
    graph = (max_pool(convolve(x, w, (11, 9, channels), 4) + b, (8, 6, 6), 2) * weights).sum()
    f = pytensor.function(
        [x, w, b],
        [ours, graph, *pt.grad(ours, [x, w, b]), *pt.grad(graph, [x, w, b])],
        mode=FAST_CPU_MODE,
    )
    value, reference, *gradients = f(images, kernel, bias)
    _, maxima = conv_pool_ops.conv_bias_pool(images, kernel, bias, 2)
    assert (np.bitwise_count(maxima) > 1).mean() > 0.1  # the ties are there to be routed
    assert value == pytest.approx(reference, rel=tolerance)
    names = ("images", "kernel", "bias")
    for name, got, want in zip(names, gradients[:3], gradients[3:], strict=True):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("channels", [2, 32], ids=["routed", "walking the maxima"])
def test_gradients_equal_finite_differences(channels):
    rng = np.random.default_rng(1)

    def pooled(images, kernel, bias):
        return ConvBiasPool(2)(images, kernel, bias)[0]

    images = rng.normal(size=(3, 7, 7, channels))
    kernel, bias = rng.normal(size=(2, 3, channels, 3)), rng.normal(size=3)
    kernel = kernel[:, :2]  # a 2x2 kernel (a strided view): 6x6 maps, pooled to 3x3
    assert conv_pool_ops.walks_maxima(2, channels) == (channels == 32)
    pytensor.gradient.verify_grad(pooled, [images, kernel, bias], rng=rng, mode=FAST_CPU_MODE)


@pytest.mark.parametrize("native", ["1", "0"], ids=["C direct", "im2col"])
@pytest.mark.parametrize("channels", [1, 16], ids=["routed", "walking the maxima"])
def test_the_values_do_not_depend_on_the_number_of_cores(channels, native, monkeypatch):
    monkeypatch.setenv("BNN_NATIVE", native)
    assert conv_pool_ops.walks_maxima(5, channels) == (channels == 16)
    rng = np.random.default_rng(2)
    images = rng.random((9, 12, 12, channels), dtype=np.float32)
    kernel = rng.normal(size=(5, 5, channels, 4)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    gradient = rng.normal(size=(9, 4, 4, 4)).astype("float32")
    monkeypatch.setattr(conv_ops, "BLOCK_BYTES", 2 * (25 * 64 * channels + 64 * 4) * 4)
    monkeypatch.setattr(conv_ops, "CACHE_BLOCK_BYTES", 2 * 144 * channels * 4)
    results = []
    for workers in (1, 3):
        with cores_for_blocks(workers):
            pooled, maxima = conv_pool_ops.conv_bias_pool(images, kernel, bias, 2)
            grads = conv_pool_ops.conv_bias_pool_gradients(images, 5, maxima, gradient, 2)
            image_gradient = conv_pool_ops.conv_bias_pool_image_gradient(
                images, kernel, maxima, gradient, 2
            )
        results.append((pooled, maxima, *grads, image_gradient))
    for one, three in zip(*results, strict=True):
        np.testing.assert_array_equal(one, three)


def test_a_nan_wins_its_window_and_routes_nothing():
    images = np.zeros((1, 5, 5, 1))
    images[0, 1, 1, 0] = np.nan
    kernel, bias = np.ones((2, 2, 1, 1)), np.zeros(1)
    pooled, maxima = conv_pool_ops.conv_bias_pool(images, kernel, bias, 2)
    # the NaN reaches the maps (0, 0) to (1, 1): exactly the first window
    assert np.isnan(pooled[0, 0, 0, 0]) and maxima[0, 0, 0, 0] == 0
    np.testing.assert_array_equal(np.delete(pooled.ravel(), 0), 0)
    assert (maxima.ravel()[1:] == 0b1111).all()  # all four pixels tie at 0


def test_a_window_has_one_bit_per_pixel_and_the_maps_divide_into_windows():
    assert conv_pool_ops.maxima_dtype(2) == np.uint8
    assert conv_pool_ops.maxima_dtype(3) == np.uint16
    with pytest.raises(ValueError, match="up to 8x8"):
        conv_pool_ops.maxima_dtype(9)
    images, kernel, bias = np.zeros((1, 7, 6, 1)), np.zeros((2, 2, 1, 1)), np.zeros(1)
    with pytest.raises(ValueError, match=r"6x5 maps .* pool_size=2"):
        conv_pool_ops.conv_bias_pool(images, kernel, bias, 2)


def conv_logp(images):
    spec = ConvSpec(n_filters=(2, 2), n_hidden=(4,))
    with pm.Model() as model:
        logits = build_network(pt.as_tensor_variable(images), spec, FixedNormal(1.0))
        label_variable(logits, observed=np.arange(len(images), dtype="int32") % 10)
        group = pm.MeanField().groups[0]
    flat, logp = flat_logp(model, group.ordering, "float64")
    return flat, logp, [node.op for node in pytensor.graph.traversal.applys_between([], [logp])]


def test_both_conv_blocks_are_fused_and_only_the_second_has_an_image_gradient():
    images = np.random.default_rng(3).random((3, 784))
    flat, logp, ops = conv_logp(images)
    assert sum(isinstance(op, ConvBiasPool) for op in ops) == 2
    assert not any(isinstance(op, ConvGraph | PoolGraph | Conv2dValid | MaxPool2d) for op in ops)
    gradient_ops = [
        type(node.op)
        for node in pytensor.graph.traversal.applys_between([flat], [pt.grad(logp, flat)])
    ]
    assert gradient_ops.count(ConvBiasPoolGrad) == 2
    # the first block convolves the data: no one needs its images' gradient
    assert gradient_ops.count(ConvBiasPoolImageGrad) == 1


def test_a_conv_nets_logp_runs_in_blocks_and_a_dense_nets_does_not():
    rng = np.random.default_rng(4)
    images, labels = rng.random((8, 784)), rng.integers(0, 10, 8).astype("int32")
    compiled = {}
    for spec in (ConvSpec(n_filters=(2, 2), n_hidden=(4,)), DenseSpec(n_hidden=(4,))):
        with pm.Model() as model:
            label_variable(
                build_network(pt.as_tensor_variable(images), spec, FixedNormal(1.0)),
                observed=labels,
            )
            group = pm.MeanField().groups[0]
        function = compile_logp_gradient(model, group.ordering, "float64", seed=0)
        compiled[spec.name] = runs_in_blocks(function)
    assert compiled == {"conv": True, "dense": False}
