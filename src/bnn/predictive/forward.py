"""NumPy forward passes over many posterior draws at once.

Weights carry a leading draw axis: ``W`` has shape (draws, n_in, n_out), so one
batched matrix product per layer evaluates every draw. This is what the
posterior predictive and ``predict`` use: no PyTensor compilation, and NumPy's
BLAS uses every core.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bnn.core.mnist import IMAGE_SHAPE
from bnn.model.specs import ConvSpec, DenseSpec


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
    """'Valid' convolution of channels-last images under each draw, as im2col and matmul.

    ``images`` (1 or draws, n, h, w, c_in), ``kernel`` (draws, k, k, c_in, c_out),
    ``bias`` (draws, c_out); returns (draws, n, h - k + 1, w - k + 1, c_out).
    """
    return _convolve(images, kernel) + bias[:, None, None, None, :]


def _patches(images: np.ndarray, size: int) -> np.ndarray:
    """im2col: (lead, n, out_h, out_w, size**2 * c_in), in the kernel's (k, k, c_in) order."""
    windows = sliding_window_view(images, (size, size), axis=(2, 3))
    return windows.transpose(0, 1, 2, 3, 5, 6, 4).reshape(*windows.shape[:4], -1)


def _convolve(images: np.ndarray, kernel: np.ndarray, pool_size: int = 1) -> np.ndarray:
    """Convolution without bias, max-pooled by ``pool_size``: (draws, n, h', w', c_out)."""
    draws, size, _, _, c_out = kernel.shape
    patches = _patches(images, size)
    lead, n_images, out_h, out_w, width = patches.shape
    if lead == 1:
        # One input for every draw (the first layer): one GEMM with the draws
        # folded into the output channels, pooled before the draws are split out.
        folded = kernel.reshape(draws, width, c_out).transpose(1, 0, 2).reshape(width, -1)
        outputs = max_pool(patches[0] @ folded, pool_size)
        pooled = outputs.reshape(*outputs.shape[:3], draws, c_out)
        return np.ascontiguousarray(pooled.transpose(3, 0, 1, 2, 4))
    outputs = patches.reshape(lead, -1, width) @ kernel.reshape(draws, width, c_out)
    return max_pool(outputs.reshape(draws, n_images, out_h, out_w, c_out), pool_size)


def max_pool(images: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size`` x ``size`` max-pooling over the (h, w) axes of (..., h, w, c).

    An elementwise maximum of the ``size**2`` strided views of the window
    offsets: no reshape of the whole array, one pass per offset.
    """
    if size == 1:
        return images
    offsets = [images[..., row::size, col::size, :] for row in range(size) for col in range(size)]
    pooled = np.maximum(offsets[0], offsets[1])
    for view in offsets[2:]:
        np.maximum(pooled, view, out=pooled)
    return pooled


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
        outputs = _convolve(outputs, weights[f"{layer}_W"], spec.pool_size)
        outputs += weights[f"{layer}_b"][:, None, None, None, :]
        np.tanh(outputs, out=outputs)
    outputs = outputs.reshape(outputs.shape[0], len(images), spec.n_features)
    return _dense_stack(outputs, spec.dense_names, weights)


# The NumPy pass of each network in bnn.model.specs.SPECS.
FORWARDS = {"dense": dense_logits, "conv": conv_logits}

# Blocks of draws x images whose widest layer output fits in about this much
# memory stay in the CPU's caches between the passes over them (GEMM, pool,
# bias, tanh). Measured here, 100 draws of the conv net (24x24x32 maps): 66 s
# per 10k images at 16 MiB, 60 s at 8 MiB, 56 s at 6 MiB, 62 s at 1.5 MiB;
# the dense net (800 units) gives up 6% at 6 MiB (196 images) against 16 MiB.
CHUNK_BYTES = 6 * 2**20


def images_per_chunk(spec, chunk_draws: int, itemsize: int = 4) -> int:
    """How many images to push through ``chunk_draws`` draws at once (see :data:`CHUNK_BYTES`)."""
    return max(1, CHUNK_BYTES // (spec.widest_output * chunk_draws * itemsize))


def class_probabilities(images: np.ndarray, spec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax class probabilities of shape (draws, n_images, 10)."""
    logits = FORWARDS[spec.name](images.reshape(len(images), -1), spec, weights)
    return softmax(logits)
