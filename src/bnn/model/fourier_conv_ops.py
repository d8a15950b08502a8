"""A 'valid' convolution and both its gradients, computed in the frequency domain.

The conv net's second block convolves maps of 12 x 12 pixels and 32 channels
with 5 x 5 x 32 x 32 kernels, and a step needs its forward pass and its
gradients in both the maps and the kernel. As im2col and matrix products
(:mod:`bnn.model.conv_ops`) those are three thin products (32 output channels,
or a 32-wide inner dimension), each 25 x 8 x 8 multiply-adds per image and
channel pair. In the frequency domain each is one small complex product per
frequency: 12 x 7 frequencies of the real transform, 4 real multiply-adds each,
about a fifth of the arithmetic, plus the transforms of the maps.

The transforms are circular over the input's own size (H, W). A 'valid' output
pixel (h, w) reads inputs (h + i, w + j) with i, j < k, all inside the image:
no product wraps around, so the circular result's first H - k + 1 rows and
columns are the 'valid' convolution exactly. The same holds for both gradients
(see :func:`image_and_kernel_gradients`).

The forward op keeps the maps' spectrum for the gradient op, which shares one
transform of the output gradient between the two gradients. Transforms run on
SciPy's FFT (``workers`` threads: NumPy's FFT was 4-5 times slower on these
small planes), and the per-frequency products on every core, one BLAS
thread each, in blocks of frequencies (:func:`bnn.core.threads.ordered_map`).
Each frequency's product is one BLAS call and each plane's transform one
pocketfft call whichever thread runs it, so the values do not depend on the
number of cores.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
import scipy.fft
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from bnn.core.threads import block_workers, ordered_map


def _spectrum_dtype(dtype) -> np.dtype:
    return np.result_type(dtype, np.complex64)


def image_spectrum(images: np.ndarray) -> np.ndarray:
    """The real 2-D transform of channels-last images: (batch, H, W // 2 + 1, channels)."""
    return scipy.fft.rfft2(images, axes=(1, 2), workers=block_workers())


def kernel_spectrum(kernel: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """A (k, k, c_in, c_out) kernel zero-padded to the images' (H, W), transformed.

    Returns (H * (W // 2 + 1), c_in, c_out): one matrix per frequency.
    """
    spectrum = scipy.fft.rfft2(kernel, s=image_shape, axes=(0, 1))
    return spectrum.reshape(-1, *kernel.shape[2:])


def per_frequency(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left[f] @ right[f]`` for every frequency ``f``: (frequencies, rows, columns).

    ``left`` and ``right`` are stacks of matrices, one per frequency (views with
    any strides BLAS accepts). Blocks of frequencies run on every core.
    """
    n_frequencies = len(left)
    out = np.empty((n_frequencies, left.shape[1], right.shape[2]), np.result_type(left, right))
    workers = block_workers()
    size = -(-n_frequencies // (2 * workers))  # two blocks per worker: an even load

    def multiply(first: int) -> None:
        block = slice(first, first + size)
        np.matmul(left[block], right[block], out=out[block])

    for _ in ordered_map(multiply, range(0, n_frequencies, size), workers):
        pass
    return out


def _by_frequency(spectrum: np.ndarray) -> np.ndarray:
    """(batch, H, Wf, c) -> a (H * Wf, batch, c) view: one (batch, c) matrix per frequency."""
    batch, height, half_width, channels = spectrum.shape
    return spectrum.reshape(batch, height * half_width, channels).transpose(1, 0, 2)


def _inverse(spectra: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """(H * Wf, ...) spectra, frequency first, back to (H, W, ...) real values."""
    height, width = image_shape
    planes = spectra.reshape(height, width // 2 + 1, *spectra.shape[1:])
    return scipy.fft.irfft2(planes, s=image_shape, axes=(0, 1), workers=block_workers())


def fourier_conv2d(images: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'Valid' convolution ``out[b, h, w, o] = sum images[b, h + i, w + j, c] kernel[i, j, c, o]``.

    Returns the convolution (batch, H - k + 1, W - k + 1, c_out) and the images'
    spectrum (:func:`image_spectrum`), which :func:`image_and_kernel_gradients` reads.
    """
    size = kernel.shape[0]
    image_shape = images.shape[1:3]
    spectrum = image_spectrum(images)
    # A correlation: the kernel's conjugate spectrum (real kernels).
    maps = per_frequency(_by_frequency(spectrum), kernel_spectrum(kernel, image_shape).conj())
    circular = _inverse(maps, image_shape)  # (H, W, batch, c_out)
    valid = circular[: image_shape[0] - size + 1, : image_shape[1] - size + 1]
    return np.ascontiguousarray(valid.transpose(2, 0, 1, 3)), spectrum


def image_and_kernel_gradients(
    spectrum: np.ndarray, kernel: np.ndarray, gradient: np.ndarray, image_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of :func:`fourier_conv2d` in its images and its kernel.

    ``spectrum`` is the images' (the forward pass's second result) and
    ``gradient`` the gradient in the output, (batch, H - k + 1, W - k + 1, c_out).
    With ``G`` the output gradient zero-padded to (H, W): the image gradient is
    the circular convolution of ``G`` with the kernel (``G^ K^`` per frequency;
    an output pixel's gradient reaches inputs at most k - 1 pixels beyond it,
    so nothing wraps), and the kernel gradient the circular correlation of the
    images with ``G`` (``X^ conj(G^)`` summed over the batch; offsets below k
    read no padding beyond the image).
    """
    size = kernel.shape[0]
    output_spectrum = _by_frequency(
        scipy.fft.rfft2(gradient, s=image_shape, axes=(1, 2), workers=block_workers())
    )
    kernels = kernel_spectrum(kernel, image_shape)  # (F, c_in, c_out)
    image_gradient = _inverse(
        per_frequency(output_spectrum, kernels.transpose(0, 2, 1)), image_shape
    )
    kernel_gradient = _inverse(
        per_frequency(_by_frequency(spectrum).transpose(0, 2, 1), output_spectrum.conj()),
        image_shape,
    )
    return (
        np.ascontiguousarray(image_gradient.transpose(2, 0, 1, 3)),
        np.ascontiguousarray(kernel_gradient[:size, :size]),
    )


class FourierConv2d(Op):
    """'Valid' convolution of channels-last images by a (k, k, c_in, c_out) kernel.

    Outputs the convolution and the images' spectrum, which only the gradient
    (:class:`FourierConv2dGrad`) reads.
    """

    __props__ = ()

    def make_node(self, images, kernel):
        images, kernel = pt.as_tensor_variable(images), pt.as_tensor_variable(kernel)
        maps = pt.tensor(dtype=images.dtype, shape=(None, None, None, kernel.type.shape[3]))
        spectrum_dtype = str(_spectrum_dtype(images.dtype))
        spectrum = pt.tensor(dtype=spectrum_dtype, shape=(None, None, None, images.type.shape[3]))
        return Apply(self, [images, kernel], [maps, spectrum])

    def perform(self, node, inputs, output_storage):
        images, kernel = (np.ascontiguousarray(a, dtype=inputs[0].dtype) for a in inputs)
        maps, spectrum = fourier_conv2d(images, kernel)
        output_storage[0][0], output_storage[1][0] = maps, spectrum

    def connection_pattern(self, node):
        return [[True, False], [True, False]]

    def pullback(self, inputs, outputs, cotangents):
        images, kernel = inputs
        return FourierConv2dGrad()(outputs[1], kernel, cotangents[0], images.shape)


class FourierConv2dGrad(Op):
    """The gradients of :class:`FourierConv2d` in its images and its kernel.

    Inputs: the images' spectrum, the kernel, the output gradient and the images' shape.
    """

    __props__ = ()

    def make_node(self, spectrum, kernel, gradient, image_shape):
        spectrum, kernel, gradient, image_shape = map(
            pt.as_tensor_variable, (spectrum, kernel, gradient, image_shape)
        )
        images = pt.tensor(dtype=gradient.dtype, shape=(None, None, None, kernel.type.shape[2]))
        return Apply(self, [spectrum, kernel, gradient, image_shape], [images, kernel.type()])

    def perform(self, node, inputs, output_storage):
        spectrum, kernel, gradient, image_shape = inputs
        dtype = node.outputs[0].dtype
        image_gradient, kernel_gradient = image_and_kernel_gradients(
            spectrum,
            kernel.astype(dtype, copy=False),
            np.ascontiguousarray(gradient, dtype=dtype),
            (int(image_shape[1]), int(image_shape[2])),
        )
        output_storage[0][0] = image_gradient.astype(dtype, copy=False)
        output_storage[1][0] = kernel_gradient.astype(node.outputs[1].dtype, copy=False)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(len(inputs))]
