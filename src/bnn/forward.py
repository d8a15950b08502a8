"""NumPy forward passes over many posterior draws at once.

Weights carry a leading draw axis: ``W`` has shape (draws, n_in, n_out), so one
batched matrix product per layer evaluates every draw. This is what the
posterior predictive and ``predict`` use: no PyTensor compilation, and NumPy's
BLAS uses every core.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bnn.networks import IMAGE_SHAPE, ConvSpec, DenseSpec


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
    draws, size, _, c_in, c_out = kernel.shape
    lead, n_images = images.shape[:2]
    # (lead, n, out_h, out_w, c_in, k, k) -> rows of (k, k, c_in), the kernel's C order.
    windows = sliding_window_view(images, (size, size), axis=(2, 3))
    out_h, out_w = windows.shape[2:4]
    patches = windows.transpose(0, 1, 2, 3, 5, 6, 4).reshape(lead, -1, size * size * c_in)
    outputs = patches @ kernel.reshape(draws, size * size * c_in, c_out) + bias[:, None, :]
    return outputs.reshape(draws, n_images, out_h, out_w, c_out)


def max_pool(images: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size`` x ``size`` max-pooling of (draws, n, h, w, c) arrays."""
    draws, n_images, height, width, channels = images.shape
    windows = images.reshape(draws, n_images, height // size, size, width // size, size, channels)
    return windows.max(axis=(3, 5))


def conv_logits(images: np.ndarray, spec: ConvSpec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Logits of shape (draws, n_images, 10) of the convolutional network.

    ``images`` has shape (n_images, 784); weights carry a leading draw axis.
    """
    outputs = images.reshape(1, len(images), *IMAGE_SHAPE, 1)
    for layer, _, _ in spec.conv_shapes:
        outputs = np.tanh(conv2d(outputs, weights[f"{layer}_W"], weights[f"{layer}_b"]))
        outputs = max_pool(outputs, spec.pool_size)
    outputs = outputs.reshape(outputs.shape[0], len(images), spec.n_features)
    return _dense_stack(outputs, spec.dense_names, weights)


FORWARDS = {"dense": dense_logits, "conv": conv_logits}


def class_probabilities(images: np.ndarray, spec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax class probabilities of shape (draws, n_images, 10)."""
    logits = FORWARDS[spec.name](images.reshape(len(images), -1), spec, weights)
    return softmax(logits)
