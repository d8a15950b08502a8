"""A 'valid' convolution whose forward pass and gradients are NumPy kernels.

The conv net's layers (:func:`bnn.model.layers.conv2d`) build a convolution as im2col
(every patch stacked into one matrix) and one matrix product, in plain PyTensor
ops, wrapped in a :class:`ConvGraph` so that it is recognisable. Every backend
inlines that graph. The fused ADVI engine (:mod:`bnn.inference.logp_gradient`) swaps it for
:class:`Conv2dValid`, whose gradients avoid what the im2col graph does worst on a
CPU: building the patches from 25 slices (a ``Join``), and turning the patch
gradient (a matrix 25 times the input's size) back into an image gradient with
25 ``IncSubtensor`` s. Here the patches are one strided copy per block of
images, and the image gradient is one product per block and one loop that adds
each patch's gradient back into its pixels, while the block is in cache.

The blocks run on every core, each with one BLAS thread
(:func:`bnn.core.threads.ordered_map`): the single-threaded copies and loops
between the products then run in parallel too, the thin products (32 output
channels) run faster one per core than split across cores, and no idle
OpenBLAS thread spins beside them. A block is computed by one thread, whichever
it is, and block results are summed in block order, so the values do not
depend on the number of cores.
"""

from __future__ import annotations

from collections import deque

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from bnn.core.threads import ordered_map
from bnn.model import im2col
from bnn.model.im2col import patch_matrix, tap_matrix

# Patch-matrix bytes per block: in cache, and under glibc's 32 MiB mmap threshold.
BLOCK_BYTES = 8 * 2**20
# Smaller blocks where a block is written and read back at once (one-channel taps,
# patch gradients): they stay in the 2 MiB-per-core L2 (benchmarks/conv_kernels.py).
CACHE_BLOCK_BYTES = 2 * 2**20


def batch_blocks(batch: int, bytes_per_image: int, budget: int | None = None):
    """:func:`bnn.model.im2col.batch_blocks`, ``budget`` defaulting to :data:`BLOCK_BYTES`.

    The default is read when called (tests shrink it).
    """
    return im2col.batch_blocks(batch, bytes_per_image, BLOCK_BYTES if budget is None else budget)


def image_blocks(images: np.ndarray, kernel_size: int, budget: int | None = None):
    """Slices of the batch whose patch matrices fit in ``budget`` (default :data:`BLOCK_BYTES`)."""
    return batch_blocks(len(images), im2col.patch_bytes(images, kernel_size), budget)


def reuse(storage: list, shape: tuple, dtype) -> np.ndarray:
    """The array left in an output cell by the previous call, if it fits; else a new one."""
    if storage[0] is None or storage[0].shape != shape or storage[0].dtype != dtype:
        storage[0] = np.empty(shape, dtype)
    return storage[0]


def conv2d_valid(images: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None):
    """``out[b, h, w, o] = sum_{i, j, c} images[b, h + i, w + j, c] * kernel[i, j, c, o]``."""
    size, n_out = kernel.shape[0], kernel.shape[3]
    batch, height, width, _ = images.shape
    shape = (batch, height - size + 1, width - size + 1, n_out)
    out = np.empty(shape, images.dtype) if out is None else out
    matrix = kernel.reshape(-1, n_out)

    def convolve_block(block: slice) -> None:
        if images.shape[3] == 1:
            taps = tap_matrix(images[block], size)
            np.dot(taps.T, matrix, out=out[block].reshape(-1, n_out))
        else:
            np.dot(patch_matrix(images[block], size), matrix, out=out[block].reshape(-1, n_out))

    deque(ordered_map(convolve_block, _blocks(images, size)), maxlen=0)
    return out


def _blocks(images: np.ndarray, kernel_size: int) -> list[slice]:
    # One-channel tap matrices are written and read back at once: cache-sized blocks.
    budget = CACHE_BLOCK_BYTES if images.shape[3] == 1 else BLOCK_BYTES
    return image_blocks(images, kernel_size, budget)


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _add_patch_gradient(patch_gradient, size, out):
    """col2im: add each row of ``patch_gradient`` back into the pixels of its patch."""
    batch, height, width, channels = out.shape
    out_h, out_w = height - size + 1, width - size + 1
    for b in range(batch):
        for h in range(out_h):
            for w in range(out_w):
                row = (b * out_h + h) * out_w + w
                for i in range(size):
                    for j in range(size):
                        first = (i * size + j) * channels
                        for c in range(channels):
                            out[b, h + i, w + j, c] += patch_gradient[row, first + c]


def conv2d_image_gradient(gradient: np.ndarray, kernel: np.ndarray, out: np.ndarray):
    """The gradient of :func:`conv2d_valid` in its images, into ``out`` (overwritten).

    Per block of images, one wide product gives the gradient in every patch
    (``gradient @ kernel.T``, a matrix 25 times the images' size, kept in cache),
    and one loop adds each patch's rows back into its pixels.
    """
    size, n_out = kernel.shape[0], kernel.shape[3]
    batch, out_h, out_w, _ = gradient.shape
    transposed = np.ascontiguousarray(kernel.reshape(-1, n_out).T.astype(out.dtype, copy=False))
    rows = np.ascontiguousarray(gradient, dtype=out.dtype).reshape(batch, -1, n_out)
    per_image = out_h * out_w * transposed.shape[1] * out.itemsize

    def add_block(block: slice) -> None:
        out[block] = 0
        patch_gradient = np.dot(rows[block].reshape(-1, n_out), transposed)
        _add_patch_gradient(patch_gradient, size, out[block])

    deque(ordered_map(add_block, batch_blocks(batch, per_image, CACHE_BLOCK_BYTES)), maxlen=0)
    return out


def conv2d_kernel_gradient(images: np.ndarray, gradient: np.ndarray, size: int) -> np.ndarray:
    """The gradient of :func:`conv2d_valid` in its kernel, (k * k * c, o) in float64.

    Blocks' products are summed in float64, so the result does not drift with the batch.
    """
    n_out = gradient.shape[3]

    def block_gradient(block: slice) -> np.ndarray:
        rows = gradient[block].reshape(-1, n_out)
        if images.shape[3] == 1:
            return np.dot(tap_matrix(images[block], size), rows)
        return np.dot(patch_matrix(images[block], size).T, rows)

    kernel = np.zeros((size * size * images.shape[3], n_out), np.float64)
    for block_kernel in ordered_map(block_gradient, _blocks(images, size)):
        kernel += block_kernel  # in block order: the same sum for any number of workers
    return kernel


class Conv2dValid(Op):
    """'Valid' convolution of channels-last images (batch, h, w, c) by a (k, k, c, o) kernel."""

    __props__ = ()

    def make_node(self, images, kernel):
        images, kernel = pt.as_tensor_variable(images), pt.as_tensor_variable(kernel)
        out = pt.tensor(dtype=images.dtype, shape=(None, None, None, kernel.type.shape[3]))
        return Apply(self, [images, kernel], [out])

    def perform(self, node, inputs, output_storage):
        images, kernel = inputs
        size, n_out = kernel.shape[0], kernel.shape[3]
        batch, height, width, _ = images.shape
        shape = (batch, height - size + 1, width - size + 1, n_out)
        out = reuse(output_storage[0], shape, images.dtype)
        conv2d_valid(images, kernel.astype(images.dtype, copy=False), out)

    def pullback(self, inputs, outputs, cotangents):
        images, kernel = inputs
        (gradient,) = cotangents
        return [
            Conv2dInputGrad()(gradient, kernel, images.shape),
            Conv2dKernelGrad()(images, gradient, kernel.shape),
        ]


class Conv2dInputGrad(Op):
    """The gradient of :class:`Conv2dValid` in its images, given the output gradient."""

    __props__ = ()

    def make_node(self, gradient, kernel, image_shape):
        gradient, kernel = pt.as_tensor_variable(gradient), pt.as_tensor_variable(kernel)
        image_shape = pt.as_tensor_variable(image_shape)
        out = pt.tensor(dtype=gradient.dtype, shape=(None, None, None, kernel.type.shape[2]))
        return Apply(self, [gradient, kernel, image_shape], [out])

    def perform(self, node, inputs, output_storage):
        gradient, kernel, image_shape = inputs
        images = reuse(output_storage[0], tuple(image_shape), node.outputs[0].dtype)
        conv2d_image_gradient(gradient, kernel, images)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(3)]


class Conv2dKernelGrad(Op):
    """The gradient of :class:`Conv2dValid` in its kernel, given the output gradient."""

    __props__ = ()

    def make_node(self, images, gradient, kernel_shape):
        images, gradient = pt.as_tensor_variable(images), pt.as_tensor_variable(gradient)
        kernel_shape = pt.as_tensor_variable(kernel_shape)
        out = pt.tensor(dtype=images.dtype, shape=(None, None, images.type.shape[3], None))
        return Apply(self, [images, gradient, kernel_shape], [out])

    def perform(self, node, inputs, output_storage):
        images, gradient, kernel_shape = inputs
        kernel = conv2d_kernel_gradient(images, gradient, int(kernel_shape[0]))
        output_storage[0][0] = kernel.reshape(tuple(kernel_shape)).astype(node.outputs[0].dtype)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(3)]


class ConvGraph(OpFromGraph):
    """The im2col-and-GEMM convolution graph, marked so a rewrite can find it.

    ``inline=True``: every backend compiles the plain PyTensor ops inside, so the
    model is the same graph it always was; only :mod:`bnn.inference.logp_gradient` replaces it.
    """


@numba.njit(error_model="numpy", cache=True)
def _route_pool_gradient(images, pooled, gradient, out, size):
    """``out = gradient`` (upsampled) where ``images`` equals its window's max, else 0."""
    zero = out.dtype.type(0)
    batch, height, width, channels = images.shape
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                ph, pw = h // size, w // size
                for c in range(channels):
                    is_max = images[b, h, w, c] == pooled[b, ph, pw, c]
                    out[b, h, w, c] = gradient[b, ph, pw, c] if is_max else zero


class PoolGraph(OpFromGraph):
    """The reshape-and-max pooling graph, marked so a rewrite can find it (``pool_size`` set)."""

    pool_size: int


@numba.njit(error_model="numpy", cache=True)
def _max_pool(images, size, out):
    batch, pooled_h, pooled_w, channels = out.shape
    for b in range(batch):
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                for c in range(channels):
                    out[b, ph, pw, c] = images[b, ph * size, pw * size, c]
                for d in range(1, size * size):
                    h, w = ph * size + d // size, pw * size + d % size
                    for c in range(channels):
                        value = images[b, h, w, c]
                        # a NaN anywhere in the window is the window's maximum, as in np.max
                        if value > out[b, ph, pw, c] or value != value:
                            out[b, ph, pw, c] = value


def max_pool_values(images: np.ndarray, size: int, out: np.ndarray) -> np.ndarray:
    """Non-overlapping ``size`` x ``size`` max-pool of channels-last images, into ``out``.

    One pass over the images, channels innermost (where four strided NumPy
    ``maximum`` passes read them four times).
    """
    _max_pool(np.ascontiguousarray(images), size, out)
    return out


class MaxPool2d(Op):
    """Max-pool of channels-last images; the gradient goes to every maximum of a window.

    Ties share it as PyTensor's ``max`` gradient does (``eq`` mask), so this op and
    the reshape-and-max graph have the same gradient, not just the same values.
    """

    __props__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def make_node(self, images):
        images = pt.as_tensor_variable(images)
        out = pt.tensor(dtype=images.dtype, shape=(None, None, None, images.type.shape[3]))
        return Apply(self, [images], [out])

    def perform(self, node, inputs, output_storage):
        (images,) = inputs
        batch, height, width, channels = images.shape
        shape = (batch, height // self.size, width // self.size, channels)
        max_pool_values(images, self.size, reuse(output_storage[0], shape, images.dtype))

    def pullback(self, inputs, outputs, cotangents):
        return [MaxPool2dGrad(self.size)(inputs[0], outputs[0], cotangents[0])]


class MaxPool2dGrad(Op):
    """The gradient of :class:`MaxPool2d` in its input."""

    __props__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def make_node(self, images, pooled, gradient):
        images, pooled, gradient = map(pt.as_tensor_variable, (images, pooled, gradient))
        return Apply(self, [images, pooled, gradient], [images.type()])

    def perform(self, node, inputs, output_storage):
        images, pooled, gradient = (np.ascontiguousarray(array) for array in inputs)
        out = reuse(output_storage[0], images.shape, images.dtype)
        _route_pool_gradient(
            images, pooled, gradient.astype(images.dtype, copy=False), out, self.size
        )

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(3)]
