"""The NumPy convolution of the fused engine: values and gradients against the im2col graph."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.inference.logp_gradient import FAST_CPU_MODE, flat_logp
from bnn.model import conv_ops
from bnn.model.conv_ops import Conv2dValid, ConvGraph, MaxPool2d, PoolGraph, conv2d_valid
from bnn.model.conv_pool_ops import ConvBiasPool
from bnn.model.layers import convolve, image_patches, max_pool
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import label_variable
from bnn.model.specs import ConvSpec


def loop_convolution(images, kernel):
    """The definition, one kernel offset at a time."""
    size = kernel.shape[0]
    out_h, out_w = images.shape[1] - size + 1, images.shape[2] - size + 1
    out = np.zeros((images.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(size):
        for j in range(size):
            out += np.einsum("bhwc,co->bhwo", images[:, i : i + out_h, j : j + out_w], kernel[i, j])
    return out


@pytest.fixture(params=[3, 1], ids=["3 channels", "1 channel (tap matrix)"])
def arrays(request):
    rng = np.random.default_rng(0)
    channels = request.param
    return rng.normal(size=(5, 11, 10, channels)), rng.normal(size=(4, 4, channels, 6)), rng


def test_forward_is_the_convolution(arrays):
    images, kernel, _ = arrays
    np.testing.assert_allclose(conv2d_valid(images, kernel), loop_convolution(images, kernel))


def test_gradients_equal_the_im2col_graph_and_finite_differences(arrays, monkeypatch):
    images, kernel, rng = arrays
    channels = images.shape[3]
    # Blocks of one or two images, so that every blocked loop is exercised: the
    # patches (BLOCK_BYTES), and the taps and patch gradients (CACHE_BLOCK_BYTES).
    two_images = 2 * 7 * 8 * 16 * channels * 8
    monkeypatch.setattr(conv_ops, "BLOCK_BYTES", two_images)
    monkeypatch.setattr(conv_ops, "CACHE_BLOCK_BYTES", two_images)
    assert len(conv_ops.image_blocks(images, 4)) == 3
    assert len(conv_ops.image_blocks(images, 4, conv_ops.CACHE_BLOCK_BYTES)) == 3
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    weights = pt.as_tensor_variable(rng.normal(size=(5, 8, 7, 6)))
    ours = (Conv2dValid()(x, w) * weights).sum()
    graph = (convolve(x, w, (11, 10, channels), 4) * weights).sum()
    f = pytensor.function(
        [x, w], [ours, graph, *pt.grad(ours, [x, w]), *pt.grad(graph, [x, w])], mode=FAST_CPU_MODE
    )
    value, reference, d_images, d_kernel, ref_images, ref_kernel = f(images, kernel)
    assert value == pytest.approx(reference, rel=1e-12)
    np.testing.assert_allclose(d_images, ref_images, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_kernel, ref_kernel, rtol=1e-10, atol=1e-12)
    pytensor.gradient.verify_grad(
        Conv2dValid(), [images[:2, :6, :5], kernel[:3, :3, :, :2]], rng=rng, mode=FAST_CPU_MODE
    )


def test_the_model_graph_is_still_im2col_and_only_the_fused_function_swaps_it(arrays):
    images, kernel, _ = arrays
    channels = images.shape[3]
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    wrapped = convolve(x, w, (11, 10, channels), 4)
    assert isinstance(wrapped.owner.op, ConvGraph)
    patches = image_patches(x, 4, 11, 10)
    plain = pt.dot(patches, w.reshape((16 * channels, -1))).reshape((-1, 8, 7, 6))
    # default mode (Numba): the wrapper is inlined, no NumPy kernel is involved
    f = pytensor.function([x, w], [wrapped, plain])
    wrapped_value, plain_value = f(images, kernel)
    np.testing.assert_allclose(wrapped_value, plain_value, rtol=1e-12)
    assert not any(isinstance(node.op, Conv2dValid) for node in f.maker.fgraph.apply_nodes)


def test_fused_logp_graph_uses_the_numpy_kernels():
    spec = ConvSpec(n_filters=(2, 2), n_hidden=(4,))
    images = np.random.default_rng(0).random((3, 784))
    with pm.Model() as model:
        logits = build_network(pt.as_tensor_variable(images), spec, FixedNormal(1.0))
        label_variable(logits, observed=np.array([1, 2, 3], dtype="int32"))
        group = pm.MeanField().groups[0]
    _, logp = flat_logp(model, group.ordering, "float64")
    ops = {type(node.op) for node in pytensor.graph.traversal.applys_between([], [logp])}
    # each block's conv, bias and pool are one op (test_conv_pool_ops.py); no im2col graph left
    assert ConvBiasPool in ops and not {ConvGraph, PoolGraph} & ops


def test_max_pool_and_its_gradient_equal_the_reshape_max_graph_with_ties():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 3, size=(3, 6, 8, 4)).astype("float64")  # many tied maxima
    x = pt.tensor4(dtype="float64")
    weights = pt.as_tensor_variable(rng.normal(size=(3, 3, 4, 4)))
    ours = (MaxPool2d(2)(x) * weights).sum()
    graph = (max_pool(x, (6, 8, 4), 2) * weights).sum()
    assert isinstance(max_pool(x, (6, 8, 4), 2).owner.op, PoolGraph)
    f = pytensor.function(
        [x], [ours, graph, pt.grad(ours, x), pt.grad(graph, x)], mode=FAST_CPU_MODE
    )
    value, reference, gradient, reference_gradient = f(images)
    assert value == pytest.approx(reference, rel=1e-12)
    np.testing.assert_array_equal(gradient, reference_gradient)
    smooth = rng.normal(size=(2, 4, 4, 3))
    pytensor.gradient.verify_grad(MaxPool2d(2), [smooth], rng=rng, mode=FAST_CPU_MODE)


def test_max_pool_values_equal_numpys_max_and_keep_nan():
    rng = np.random.default_rng(2)
    images = rng.normal(size=(2, 6, 4, 3)).astype("float32")
    images[0, 1, 0, 2] = np.nan  # the first window's last position, channel 2
    out = np.empty((2, 3, 2, 3), "float32")
    conv_ops.max_pool_values(images, 2, out)
    expected = images.reshape(2, 3, 2, 2, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(out[0, 0, 0, 2]) and np.isfinite(np.delete(out.ravel(), 2)).all()


def test_one_channel_tap_matrix_is_the_patch_matrix_transposed():
    images = np.random.default_rng(3).normal(size=(3, 9, 7, 1))
    np.testing.assert_array_equal(
        conv_ops.tap_matrix(images, 3), conv_ops.patch_matrix(images, 3).T
    )
