"""The frequency-domain convolution against the im2col kernels and finite differences."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.core.threads import cores_for_blocks
from bnn.inference.logp_gradient import FAST_CPU_MODE
from bnn.model import conv_ops, fourier_conv_ops
from bnn.model.fourier_conv_ops import FourierConv2d, FourierConv2dGrad

# (images, kernel) shapes: square and not, even and odd widths (the real transform's
# last frequency differs), one input channel and several.
SHAPES = [
    ((4, 12, 12, 3), (5, 5, 3, 4)),
    ((3, 9, 7, 2), (3, 3, 2, 5)),
    ((2, 6, 11, 1), (4, 4, 1, 3)),
]


def arrays(images_shape, kernel_shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=images_shape).astype(dtype)
    kernel = rng.normal(size=kernel_shape).astype(dtype)
    size = kernel_shape[0]
    out_shape = (images_shape[0], images_shape[1] - size + 1, images_shape[2] - size + 1)
    gradient = rng.normal(size=(*out_shape, kernel_shape[3])).astype(dtype)
    return images, kernel, gradient


@pytest.mark.parametrize(("images_shape", "kernel_shape"), SHAPES)
def test_the_convolution_and_its_gradients_equal_the_im2col_kernels(images_shape, kernel_shape):
    images, kernel, gradient = arrays(images_shape, kernel_shape, "float64")
    maps, spectrum = fourier_conv_ops.fourier_conv2d(images, kernel)
    image_gradient, kernel_gradient = fourier_conv_ops.image_and_kernel_gradients(
        spectrum, kernel, gradient, images.shape[1:3]
    )
    reference_image_gradient = conv_ops.conv2d_image_gradient(
        gradient, kernel, np.empty_like(images)
    )
    reference_kernel_gradient = conv_ops.conv2d_kernel_gradient(images, gradient, kernel.shape[0])
    # Float64 transforms of a few dozen values: errors near 1e-15 of the values' scale.
    close = {"rtol": 1e-10, "atol": 1e-12}
    np.testing.assert_allclose(maps, conv_ops.conv2d_valid(images, kernel), **close)
    np.testing.assert_allclose(image_gradient, reference_image_gradient, **close)
    np.testing.assert_allclose(
        kernel_gradient, reference_kernel_gradient.reshape(kernel.shape), **close
    )
    assert maps.flags.c_contiguous and image_gradient.flags.c_contiguous


def test_float32_stays_float32_and_agrees_with_float64_to_its_precision():
    images, kernel, gradient = arrays(*SHAPES[0], "float64")
    exact = fourier_conv_ops.fourier_conv2d(images, kernel)
    single = fourier_conv_ops.fourier_conv2d(images.astype("float32"), kernel.astype("float32"))
    assert single[0].dtype == np.float32 and single[1].dtype == np.complex64
    # 75 products per output of unit-scale values: float32's 6e-8 relative, summed.
    np.testing.assert_allclose(single[0], exact[0], rtol=0, atol=1e-4 * np.abs(exact[0]).max())
    gradients = fourier_conv_ops.image_and_kernel_gradients(
        single[1], kernel.astype("float32"), gradient.astype("float32"), (12, 12)
    )
    reference = fourier_conv_ops.image_and_kernel_gradients(exact[1], kernel, gradient, (12, 12))
    for got, want in zip(gradients, reference, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_the_ops_gradients_equal_finite_differences():
    rng = np.random.default_rng(1)
    images, kernel, _ = arrays((2, 7, 6, 2), (3, 3, 2, 3), "float64", seed=1)

    def convolved(images, kernel):
        return FourierConv2d()(images, kernel)[0]

    pytensor.gradient.verify_grad(convolved, [images, kernel], rng=rng, mode=FAST_CPU_MODE)


def test_one_op_gives_both_gradients_from_the_kept_spectrum():
    x, w = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    maps, _ = FourierConv2d()(x, w)
    gradients = pt.grad(maps.sum(), [x, w])
    nodes = pytensor.graph.traversal.applys_between([x, w], gradients)
    assert sum(isinstance(node.op, FourierConv2dGrad) for node in nodes) == 1


def test_the_values_do_not_depend_on_the_number_of_cores():
    images, kernel, gradient = arrays(*SHAPES[0], "float32", seed=2)
    results = []
    for workers in (1, 3):
        with cores_for_blocks(workers):
            maps, spectrum = fourier_conv_ops.fourier_conv2d(images, kernel)
            results.append(
                (
                    maps,
                    spectrum,
                    *fourier_conv_ops.image_and_kernel_gradients(
                        spectrum, kernel, gradient, (12, 12)
                    ),
                )
            )
    for one, three in zip(*results, strict=True):
        np.testing.assert_array_equal(one, three)
