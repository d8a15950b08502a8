"""A convolution, its bias and its max-pool as one op, in blocks of images.

Run as separate ops, a conv block's convolution, bias and pool and, backwards,
the pool's gradient and the bias's sum each stream the maps at full resolution
through memory (the first block's, batch x 24 x 24 x 32, are the largest
arrays of a step). :class:`ConvBiasPool` makes the maps one block of images
at a time and keeps only the pooled maps and a bit mask of each window's
maxima. Backwards, only the pixels that won their window (a quarter of the
maps) carry a gradient, and the mask says which:

- :class:`ConvBiasPoolGrad` gives the kernel's and the bias's gradients. Where
  a patch row (kernel width x input channels) is long (:func:`walks_maxima`:
  the second block's 5 x 32), it walks the maxima and adds each one's patch
  rows, times its gradient, to the kernel's; a quarter of the arithmetic of
  routing the gradient to full resolution for a matrix product, in loops of
  160 contiguous values. With one input channel (the first block: rows of 5)
  the routed product, on the tap matrix, is faster. In float32 with the C
  kernels (below), both blocks route the gradient and take the product with
  the images' own rows in C (:func:`bnn.model.direct_conv.kernel_gradient`),
  which beats both.
- :class:`ConvBiasPoolImageGrad` gives the images' gradient, where they need
  one (the second block): each maximum adds its gradient times the kernel into
  the pixels of its patch. In float32 with the C kernels, the gradient is
  routed and the transposed convolution runs in registers
  (:func:`bnn.model.direct_conv.image_gradient`): four times the arithmetic of
  the walk, at several times its rate.

In float32, the convolution itself is the C direct one where it compiled
(:mod:`bnn.model.direct_conv`: no patch matrix), which also pools the maps as
it makes them (:func:`bnn.model.direct_conv.conv_pool`, windows up to 2 x 2);
otherwise im2col and a matrix product, then the Numba pool.

The blocks run on every core, one BLAS thread each
(:func:`bnn.core.threads.ordered_map`), and are summed in block order.

The rewrite that swaps the model's graph for these ops is
:func:`bnn.inference.logp_gradient.fuse_conv_pool`; the gradients are those of
the graph ``max_pool(conv(images, kernel) + bias)``, ties included.
"""

from __future__ import annotations

from collections import deque

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from bnn.core.threads import ordered_map
from bnn.model import conv_ops, direct_conv
from bnn.model.im2col import batch_blocks, patch_bytes, patch_matrix, tap_matrix


def _direct(images: np.ndarray) -> bool:
    """Whether the convolution is the C direct one (float32, where it compiled)."""
    return images.dtype == np.float32 and direct_conv.available()


def _image_blocks(
    images: np.ndarray, kernel_size: int, n_out: int, patches: bool = True
) -> list[slice]:
    """Blocks whose patches and full-resolution maps take :data:`conv_ops.BLOCK_BYTES`.

    Not a core's cache: a few large blocks per core were faster than many that
    fit in it (benchmarks/conv_kernels.py), as each block has fixed costs.
    Without patches (the direct convolution), blocks of maps that fit a core's cache.
    """
    out_h, out_w = images.shape[1] - kernel_size + 1, images.shape[2] - kernel_size + 1
    maps_bytes = out_h * out_w * n_out * images.itemsize
    if not patches:
        return batch_blocks(len(images), maps_bytes, conv_ops.CACHE_BLOCK_BYTES)
    per_image = patch_bytes(images, kernel_size) + maps_bytes
    return batch_blocks(len(images), per_image, conv_ops.BLOCK_BYTES)


def _block_maps(images: np.ndarray, kernel: np.ndarray, size: int) -> np.ndarray:
    """One block's convolution, without the bias: (batch, h - k + 1, w - k + 1, c_out)."""
    if _direct(images):  # no patch matrix (bnn.model.direct_conv)
        return direct_conv.conv_valid(images, kernel)
    n_out = kernel.shape[3]
    matrix = kernel.reshape(-1, n_out)
    batch, height, width, channels = images.shape
    shape = (batch, height - size + 1, width - size + 1, n_out)
    if channels == 1:  # the tap matrix: (k * k, pixels), the patches transposed
        return np.dot(tap_matrix(images, size).T, matrix).reshape(shape)
    return np.dot(patch_matrix(images, size), matrix).reshape(shape)


def maxima_dtype(pool_size: int) -> np.dtype:
    """The unsigned integer with a bit for each of a window's ``pool_size**2`` pixels."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if pool_size**2 <= 8 * np.dtype(dtype).itemsize:
            return np.dtype(dtype)
    raise ValueError(f"a fused max-pool takes windows up to 8x8, got {pool_size}x{pool_size}")


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _pool_with_bias(maps, bias, size, pooled, maxima):
    """``pooled`` = the maximum of ``maps + bias`` over each window; ``maxima`` its pixels.

    Bit ``d`` of ``maxima`` is set where window pixel ``d`` (row-major) equals the
    window's maximum, so that tied maxima all get the gradient, as with
    PyTensor's ``max``. A NaN wins its window and then no pixel equals it.
    """
    batch, pooled_h, pooled_w, channels = pooled.shape
    for b in range(batch):
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                for c in range(channels):
                    value = maps[b, ph * size, pw * size, c] + bias[c]
                    pooled[b, ph, pw, c] = value
                    maxima[b, ph, pw, c] = 1 if value == value else 0
                for d in range(1, size * size):
                    h, w = ph * size + d // size, pw * size + d % size
                    bit = maxima.dtype.type(1) << d
                    for c in range(channels):
                        value = maps[b, h, w, c] + bias[c]
                        if value > pooled[b, ph, pw, c] or value != value:
                            pooled[b, ph, pw, c] = value
                            maxima[b, ph, pw, c] = bit if value == value else 0
                        elif value == pooled[b, ph, pw, c]:
                            maxima[b, ph, pw, c] |= bit


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _route_to_maxima(maxima, gradient, size, routed, bias_gradient):
    """``routed`` = the pooled gradient at each window's maxima, else 0.

    Adds each channel's routed values to ``bias_gradient`` (float64).
    """
    zero = routed.dtype.type(0)
    batch, height, width, channels = routed.shape
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                ph, pw = h // size, w // size
                bit = maxima.dtype.type(1) << ((h % size) * size + w % size)
                for c in range(channels):
                    value = gradient[b, ph, pw, c] if maxima[b, ph, pw, c] & bit else zero
                    routed[b, h, w, c] = value
                    bias_gradient[c] += value


# Patch rows (kernel width x input channels) at least this long make the gradients
# walk the maxima instead of a routed matrix product (benchmarks/conv_kernels.py:
# layer 2's rows of 160 values, 9.2-10.7 ms against 13-14 ms for its kernel gradient).
SPARSE_ROW_VALUES = 64


def walks_maxima(kernel_size: int, channels: int) -> bool:
    """Whether :func:`conv_bias_pool_gradients` walks the maxima (see :data:`SPARSE_ROW_VALUES`)."""
    return kernel_size * channels >= SPARSE_ROW_VALUES


_walk = numba.njit(error_model="numpy", fastmath=True, cache=True, nogil=True)


@numba.njit(inline="always", error_model="numpy", fastmath=True)
def _add_scaled(target, source, scale):
    for t in range(target.size):
        target[t] += scale * source[t]


@_walk
def _walk_maxima(image_rows, kernel_rows, maxima, gradient, size, pool, channels, to_kernel, bias):
    """For each window's maxima, add its gradient times one side's patch rows to the other's.

    ``image_rows`` are images as (batch, h, w * c_in) and ``kernel_rows`` a
    kernel as (c_out, k, k * c_in), so that a patch row is contiguous in both.
    With ``to_kernel``, each maximum adds its gradient times its patch to
    ``kernel_rows`` (the kernel's gradient) and its gradient to ``bias``
    (float64): the images are the forward pass's. Otherwise it adds its
    gradient times the kernel to its patch's pixels in ``image_rows`` (the
    images' gradient, zeroed by the caller): the kernel is the forward pass's.
    """
    batch, pooled_h, pooled_w, n_out = gradient.shape
    width = size * channels
    for b in range(batch):
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                for o in range(n_out):
                    g = gradient[b, ph, pw, o]
                    bits = maxima[b, ph, pw, o]
                    for d in range(pool * pool):
                        if not bits & (1 << d):
                            continue
                        h = ph * pool + d // pool
                        first = (pw * pool + d % pool) * channels
                        if to_kernel:
                            bias[o] += g
                        for i in range(size):
                            patch_row = image_rows[b, h + i, first : first + width]
                            if to_kernel:
                                _add_scaled(kernel_rows[o, i], patch_row, g)
                            else:
                                _add_scaled(patch_row, kernel_rows[o, i], g)


def _gradient_blocks(images_shape: tuple, itemsize: int) -> list[slice]:
    """Blocks of images for the walks over the maxima: an image gradient per block in cache."""
    batch, height, width, channels = images_shape
    per_image = height * width * channels * itemsize
    return batch_blocks(batch, per_image, conv_ops.CACHE_BLOCK_BYTES)


def conv_bias_pool(
    images: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pool_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``max_pool(conv2d_valid(images, kernel) + bias)`` and where each window's maxima are.

    ``images`` (batch, h, w, c_in), ``kernel`` (k, k, c_in, c_out) and ``bias``
    (c_out,) share one dtype; the convolution's maps divide by ``pool_size``.
    Returns the pooled maps (batch, h', w', c_out) and, of the same shape, a bit
    mask per window (:func:`maxima_dtype`): what the gradients need of the maps.
    """
    size, n_out = kernel.shape[0], kernel.shape[3]
    batch, height, width, _ = images.shape
    maps_h, maps_w = height - size + 1, width - size + 1
    if maps_h % pool_size or maps_w % pool_size:
        raise ValueError(
            f"a fused max-pool needs whole windows: {maps_h}x{maps_w} maps do not divide by "
            f"pool_size={pool_size}"
        )
    shape = (batch, maps_h // pool_size, maps_w // pool_size, n_out)
    pooled, maxima = np.empty(shape, images.dtype), np.empty(shape, maxima_dtype(pool_size))

    def pool_block(block: slice) -> None:
        if fused:  # the maps are pooled in C as they are made, a few rows at a time
            direct_conv.conv_pool(
                images[block], kernel, bias, pool_size, pooled[block], maxima[block]
            )
            return
        maps = _block_maps(images[block], kernel, size)
        _pool_with_bias(maps, bias, pool_size, pooled[block], maxima[block])

    fused = _direct(images) and maxima.dtype == np.uint8

    blocks = _image_blocks(images, size, n_out, patches=not _direct(images))
    deque(ordered_map(pool_block, blocks), maxlen=0)
    return pooled, maxima


def conv_bias_pool_gradients(
    images: np.ndarray,
    kernel_size: int,
    maxima: np.ndarray,
    gradient: np.ndarray,
    pool_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of :func:`conv_bias_pool` in its kernel and its bias, in float64.

    ``maxima`` is the forward pass's mask and ``gradient`` the gradient in its
    pooled maps. Returns the kernel's gradient (k, k, c_in, c_out) and the bias's.
    """
    channels, direct = images.shape[3], _direct(images)
    if walks_maxima(kernel_size, channels) and not direct:
        return _walked_gradients(images, kernel_size, maxima, gradient, pool_size)
    n_out = gradient.shape[3]
    _, height, width, _ = images.shape
    maps_shape = (height - kernel_size + 1, width - kernel_size + 1, n_out)

    def block_gradients(block: slice) -> tuple[np.ndarray, np.ndarray]:
        block_images = images[block]
        routed = np.empty((len(block_images), *maps_shape), gradient.dtype)
        bias_gradient = np.zeros(n_out, np.float64)
        _route_to_maxima(maxima[block], gradient[block], pool_size, routed, bias_gradient)
        if direct:  # the images' own rows against the routed maps, sums in registers
            return direct_conv.kernel_gradient(block_images, routed).reshape(
                -1, n_out
            ), bias_gradient
        rows = routed.reshape(-1, n_out)
        if channels == 1:
            return np.dot(tap_matrix(block_images, kernel_size), rows), bias_gradient
        return np.dot(patch_matrix(block_images, kernel_size).T, rows), bias_gradient

    if direct:  # a block's images and routed maps are read once per kernel row: in cache
        per_image = (height * width * channels + int(np.prod(maps_shape))) * images.itemsize
        blocks = batch_blocks(len(images), per_image, conv_ops.CACHE_BLOCK_BYTES)
    else:
        blocks = _image_blocks(images, kernel_size, n_out)
    return _sum_blocks(
        block_gradients,
        blocks,
        (kernel_size * kernel_size * channels, n_out),
        lambda kernel: kernel.reshape(kernel_size, kernel_size, channels, n_out),
    )


def _walked_gradients(images, kernel_size, maxima, gradient, pool_size):
    """:func:`conv_bias_pool_gradients` by walking the maxima, block by block."""
    batch, height, width, channels = images.shape
    n_out = gradient.shape[3]
    image_rows = images.reshape(batch, height, width * channels)

    def block_gradients(block: slice) -> tuple[np.ndarray, np.ndarray]:
        kernel_rows = np.zeros((n_out, kernel_size, kernel_size * channels), images.dtype)
        bias_gradient = np.zeros(n_out, np.float64)
        _walk_maxima(
            image_rows[block],
            kernel_rows,
            maxima[block],
            gradient[block],
            kernel_size,
            pool_size,
            channels,
            True,
            bias_gradient,
        )
        return kernel_rows, bias_gradient

    return _sum_blocks(
        block_gradients,
        _gradient_blocks(images.shape, images.itemsize),
        (n_out, kernel_size, kernel_size * channels),
        # (c_out, k, k * c_in) -> (k, k, c_in, c_out)
        lambda rows: rows.reshape(n_out, kernel_size, kernel_size, channels).transpose(1, 2, 3, 0),
    )


def _sum_blocks(block_gradients, blocks, kernel_shape, to_kernel):
    """Each block's kernel and bias gradients, summed in float64 in block order."""
    kernel_gradient = np.zeros(kernel_shape, np.float64)
    bias_gradient = None
    for block_kernel, block_bias in ordered_map(block_gradients, blocks):
        kernel_gradient += block_kernel  # in block order: the same sums for any core count
        bias_gradient = block_bias if bias_gradient is None else bias_gradient + block_bias
    return np.ascontiguousarray(to_kernel(kernel_gradient)), bias_gradient


def conv_bias_pool_image_gradient(
    images: np.ndarray,
    kernel: np.ndarray,
    maxima: np.ndarray,
    gradient: np.ndarray,
    pool_size: int,
) -> np.ndarray:
    """The gradient of :func:`conv_bias_pool` in its images (their shape and dtype).

    Each window's maxima add their gradient times the kernel to the pixels of
    their patch (:func:`_walk_maxima`), one block of images per thread. In
    float32 with the C kernels, the gradient is routed to the maxima and the
    maps' gradient convolved back in registers (:func:`direct_conv.image_gradient`):
    four times the walk's arithmetic, at several times its rate.
    """
    batch, height, width, channels = images.shape
    size, n_out = kernel.shape[0], kernel.shape[3]
    out = np.empty(images.shape, images.dtype)
    blocks = _gradient_blocks(images.shape, images.itemsize)
    if _direct(images):
        maps_shape = (height - size + 1, width - size + 1, n_out)

        def convolve_block(block: slice) -> None:
            routed = np.empty((len(out[block]), *maps_shape), images.dtype)
            unused_bias = np.zeros(n_out, np.float64)
            _route_to_maxima(maxima[block], gradient[block], pool_size, routed, unused_bias)
            direct_conv.image_gradient(routed, kernel, out[block].shape, out[block])

        deque(ordered_map(convolve_block, blocks), maxlen=0)
        return out
    # (k, k, c_in, c_out) -> (c_out, k, k * c_in): a patch row is contiguous
    kernel_rows = np.ascontiguousarray(kernel.transpose(3, 0, 1, 2)).reshape(n_out, size, -1)
    image_rows = out.reshape(batch, height, width * channels)
    no_bias = np.zeros(n_out, np.float64)  # the walk into the images adds to no bias

    def walk_block(block: slice) -> None:
        image_rows[block] = 0
        _walk_maxima(
            image_rows[block],
            kernel_rows,
            maxima[block],
            gradient[block],
            size,
            pool_size,
            channels,
            False,
            no_bias,
        )

    deque(ordered_map(walk_block, blocks), maxlen=0)
    return out


class ConvBiasPool(Op):
    """``max_pool(conv(images, kernel) + bias)``.

    Channels-last images (batch, h, w, c_in), a (k, k, c_in, c_out) kernel and a
    (c_out,) bias. Outputs the pooled maps and the mask of each window's maxima
    (:func:`conv_bias_pool`), which only the gradients read. The images'
    gradient is its own op, so that it is not computed where no one needs it
    (images that are data).
    """

    __props__ = ("pool_size",)

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size

    def make_node(self, images, kernel, bias):
        images, kernel, bias = map(pt.as_tensor_variable, (images, kernel, bias))
        shape = (None, None, None, kernel.type.shape[3])
        pooled = pt.tensor(dtype=images.dtype, shape=shape)
        maxima = pt.tensor(dtype=str(maxima_dtype(self.pool_size)), shape=shape)
        return Apply(self, [images, kernel, bias], [pooled, maxima])

    def perform(self, node, inputs, output_storage):
        images, kernel, bias = _same_dtype(*inputs)
        pooled, maxima = conv_bias_pool(images, kernel, bias, self.pool_size)
        output_storage[0][0], output_storage[1][0] = pooled, maxima

    def connection_pattern(self, node):
        return [[True, False], [True, False], [True, False]]

    def pullback(self, inputs, outputs, cotangents):
        images, kernel, bias = inputs
        kernel_gradient, bias_gradient = ConvBiasPoolGrad(self.pool_size)(
            images, kernel, bias, outputs[1], cotangents[0]
        )
        image_gradient = ConvBiasPoolImageGrad(self.pool_size)(
            images, kernel, outputs[1], cotangents[0]
        )
        return [image_gradient, kernel_gradient, bias_gradient]


class ConvBiasPoolGrad(Op):
    """The gradients of :class:`ConvBiasPool` in its kernel and its bias.

    Inputs: the images, the kernel and the bias (for their shapes and types),
    the forward pass's mask of maxima and the gradient in its pooled maps.
    """

    __props__ = ("pool_size",)

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size

    def make_node(self, images, kernel, bias, maxima, gradient):
        inputs = list(map(pt.as_tensor_variable, (images, kernel, bias, maxima, gradient)))
        return Apply(self, inputs, [inputs[1].type(), inputs[2].type()])

    def perform(self, node, inputs, output_storage):
        images, kernel, _, maxima, gradient = inputs
        images, gradient = _same_dtype(images, gradient)
        kernel_gradient, bias_gradient = conv_bias_pool_gradients(
            images, kernel.shape[0], np.ascontiguousarray(maxima), gradient, self.pool_size
        )
        output_storage[0][0] = kernel_gradient.astype(node.outputs[0].dtype)
        output_storage[1][0] = bias_gradient.astype(node.outputs[1].dtype)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(len(inputs))]


class ConvBiasPoolImageGrad(Op):
    """The gradient of :class:`ConvBiasPool` in its images.

    Inputs: the images (for their shape and type), the kernel, the forward
    pass's mask of maxima and the gradient in its pooled maps.
    """

    __props__ = ("pool_size",)

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size

    def make_node(self, images, kernel, maxima, gradient):
        inputs = list(map(pt.as_tensor_variable, (images, kernel, maxima, gradient)))
        return Apply(self, inputs, [inputs[0].type()])

    def perform(self, node, inputs, output_storage):
        images, kernel, maxima, gradient = inputs
        images, kernel, gradient = _same_dtype(images, kernel, gradient)
        output_storage[0][0] = conv_bias_pool_image_gradient(
            images, kernel, np.ascontiguousarray(maxima), gradient, self.pool_size
        )

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, inputs[k]) for k in range(len(inputs))]


def _same_dtype(images: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """The arrays, C-contiguous, in the images' dtype (the kernels are compiled per dtype)."""
    return [np.ascontiguousarray(a, dtype=images.dtype) for a in (images, *arrays)]
