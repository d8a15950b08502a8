"""NumPy forward passes over many posterior draws at once.

Weights carry a leading draw axis: ``W`` has shape (draws, n_in, n_out), so one
batched matrix product per layer evaluates every draw. This is what the
posterior predictive and ``predict`` use: no PyTensor compilation. A call is
one pass over a block of draws x images; the predictive runs one pass per core
(:func:`bnn.predictive.chunked.probability_chunks`).
"""

from __future__ import annotations

import numpy as np

from bnn.core.mnist import IMAGE_SHAPE
from bnn.model import direct_conv
from bnn.model.im2col import batch_blocks, patch_bytes, patch_matrix, tap_matrix
from bnn.model.specs import ConvSpec, DenseSpec

# A conv block's maps at full resolution are made this many bytes at a time
# (:func:`convolve_pool`): the 2 MiB L2 cache of one core, as in the training
# kernels (bnn.model.conv_ops.CACHE_BLOCK_BYTES).
MAP_BLOCK_BYTES = 2 * 2**20


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def dense_logits(images: np.ndarray, spec: DenseSpec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of shape (draws, n_images, 10).

    Parameters
    ----------
    images : ndarray
        Shape (n_images, 784).
    spec : DenseSpec
        The architecture.
    weights : dict of ndarray
        ``{layer}_W`` of shape (draws, n_in, n_out) and ``{layer}_b`` of shape (draws, n_out).
    """
    return _dense_stack(images[None], spec.layer_names, weights)


def _dense_stack(outputs: np.ndarray, names: list[str], weights: dict) -> np.ndarray:
    # outputs: (1 or draws, n_images, n_in); tanh on every layer but the output.
    for layer in names:
        outputs = outputs @ weights[f"{layer}_W"] + weights[f"{layer}_b"][:, None, :]
        if layer != "output":
            np.tanh(outputs, out=outputs)
    return outputs


def conv2d(images: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'Valid' convolution of channels-last images under each draw, plus the bias.

    ``images`` (1 or draws, n, h, w, c_in), ``kernel`` (draws, k, k, c_in, c_out),
    ``bias`` (draws, c_out); returns (draws, n, h - k + 1, w - k + 1, c_out).
    """
    return convolve_pool(images, kernel, bias, pool_size=1)


def convolve_pool(
    images: np.ndarray, kernel: np.ndarray, bias: np.ndarray, pool_size: int
) -> np.ndarray:
    """Convolution, ``pool_size`` max-pool, bias, under each draw: (draws, n, h', w', c_out).

    In float32, where the C kernels compiled, each draw's layer is one call of
    :func:`bnn.model.direct_conv.conv_pool`: no patch matrix, the maps pooled a
    few rows at a time as they are made, written straight into the draw's
    pooled maps. Otherwise the maps at full resolution are made one cache-sized
    block of images at a time (:data:`MAP_BLOCK_BYTES`): im2col, one GEMM, then
    one pass that pools, adds the bias and writes each draw's pooled maps, so
    that neither the maps nor a deeper layer's patch matrix (25 times its input)
    leaves the cache; a first layer, with one input for every draw, folds the
    draws into the GEMM's output channels. The two routes agree to float32
    rounding (the maximum of ``maps + bias`` is the maximum plus the bias,
    rounding being monotone).
    """
    draws, size, _, _, c_out = kernel.shape
    lead, n_images, height, width, _ = images.shape
    out_h, out_w = height - size + 1, width - size + 1
    pooled = np.empty(
        (draws, n_images, out_h // pool_size, out_w // pool_size, c_out), images.dtype
    )
    bias = np.ascontiguousarray(bias, dtype=images.dtype)  # the pool kernel reshapes it
    if images.dtype == np.float32 and direct_conv.available():
        # Pooled as the maps are made, in C (bnn.model.direct_conv), a draw at a
        # time: its row buffer is all the memory the maps need.
        for draw in range(draws):
            direct_conv.conv_pool(
                images[0 if lead == 1 else draw], kernel[draw], bias[draw], pool_size, pooled[draw]
            )
        return pooled
    if lead == 1:
        folded = kernel.reshape(draws, -1, c_out).transpose(1, 0, 2).reshape(-1, draws * c_out)
        folded = np.ascontiguousarray(folded, dtype=images.dtype)
        per_image = out_h * out_w * draws * c_out * images.itemsize
        for block in batch_blocks(n_images, per_image, MAP_BLOCK_BYTES):
            maps = np.dot(_patch_rows(images[0, block], size), folded)
            _pool_add_bias(
                maps.reshape(-1, out_h, out_w, draws, c_out), bias, pool_size, pooled[:, block]
            )
        return pooled
    for draw in range(draws):
        matrix = np.ascontiguousarray(kernel[draw].reshape(-1, c_out), dtype=images.dtype)
        for block in batch_blocks(n_images, patch_bytes(images[draw], size), MAP_BLOCK_BYTES):
            maps = np.dot(_patch_rows(images[draw, block], size), matrix)
            _pool_add_bias(
                maps.reshape(-1, out_h, out_w, 1, c_out),
                bias[draw : draw + 1],
                pool_size,
                pooled[draw : draw + 1, block],
            )
    return pooled


def _patch_rows(images: np.ndarray, size: int) -> np.ndarray:
    """im2col of channels-last images, (n * out_h * out_w, k * k * c_in)."""
    if images.shape[3] == 1:  # one channel: the transposed tap matrix, 25 contiguous copies
        return tap_matrix(images, size).T
    return patch_matrix(images, size)


def _pool_add_bias(maps: np.ndarray, bias: np.ndarray, size: int, out: np.ndarray) -> None:
    """``out[d, b, ph, pw] = max over the window of maps[b, h, w, d] + bias[d]``.

    ``maps`` (images, out_h, out_w, draws, channels), ``bias`` (draws, channels),
    ``out`` (draws, images, out_h // size, out_w // size, channels). The maps are
    one cache-sized block: the maximum of the window offsets' strided views, all
    draws' channels at once, then one transposing copy into ``out``. NaN wins,
    as in ``np.maximum``: a diverged draw shows instead of vanishing in the pool.
    """
    offsets = [maps[:, row::size, col::size] for row in range(size) for col in range(size)]
    pooled = offsets[0] + bias if len(offsets) == 1 else np.maximum(offsets[0], offsets[1])
    for view in offsets[2:]:
        np.maximum(pooled, view, out=pooled)
    if len(offsets) > 1:
        pooled += bias
    out[...] = pooled.transpose(3, 0, 1, 2, 4)


def conv_logits(images: np.ndarray, spec: ConvSpec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of shape (draws, n_images, 10) of the convolutional network.

    ``images`` has shape (n_images, 784); weights carry a leading draw axis.
    Each block is conv, max-pool, bias, tanh: the network's conv, tanh, pool
    reordered. Both are exact: tanh is increasing, and a bias that is the same
    over a pooling window moves its maximum by itself. Pooling first does the
    bias and tanh on a quarter of the values.
    """
    outputs = images.reshape(1, len(images), *IMAGE_SHAPE, 1)
    for layer, _, _ in spec.conv_shapes:
        outputs = convolve_pool(
            outputs, weights[f"{layer}_W"], weights[f"{layer}_b"], spec.pool_size
        )
        np.tanh(outputs, out=outputs)
    outputs = outputs.reshape(outputs.shape[0], len(images), spec.n_features)
    return _dense_stack(outputs, spec.dense_names, weights)


# The NumPy pass of each network in bnn.model.specs.SPECS.
FORWARDS = {"dense": dense_logits, "conv": conv_logits}

# Blocks of draws x images whose widest layer output fits in about this much
# memory stay in the CPU's caches between the passes over them (GEMM, bias,
# tanh). Measured here: the dense net (800 units) gives up 6% at 6 MiB (196
# images) against 16 MiB. The conv net's widest kept output is its pooled first
# maps (34 images of 10 draws).
CHUNK_BYTES = 6 * 2**20

# One forward pass may take several chunks of images (the same draws), sized by
# its widest output as chunks are. The conv net's layers are C loops that pool
# their maps as they make them (bnn.model.direct_conv) and are bound by
# arithmetic, not by the caches; a pass has a fixed cost besides (a C call per
# draw and layer, the Python between them, the GIL that two workers share), which
# four chunks spread over four times the images. docs/speed.md has the
# measurements. The dense net's GEMMs are best at one cache-sized chunk.
PASS_BYTES = {"dense": CHUNK_BYTES, "conv": 4 * CHUNK_BYTES}


def images_per_chunk(spec, chunk_draws: int, itemsize: int = 4) -> int:
    """How many images to push through ``chunk_draws`` draws at once (see :data:`CHUNK_BYTES`)."""
    return max(1, CHUNK_BYTES // (spec.widest_output * chunk_draws * itemsize))


def chunks_per_pass(spec, chunk_draws: int, chunk_images: int, itemsize: int = 4) -> int:
    """How many chunks of ``chunk_images`` images one forward pass takes (:data:`PASS_BYTES`).

    A pass's probabilities are each chunk's own: an image's forward pass does
    not depend on the other images in it (each conv image is its own loop, and
    a GEMM row's sum runs over its own inputs).
    """
    chunk_bytes = spec.widest_output * chunk_draws * chunk_images * itemsize
    return max(1, PASS_BYTES[spec.name] // chunk_bytes)


def class_probabilities(images: np.ndarray, spec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax class probabilities of shape (draws, n_images, 10)."""
    logits = FORWARDS[spec.name](images.reshape(len(images), -1), spec, weights)
    return softmax(logits)
