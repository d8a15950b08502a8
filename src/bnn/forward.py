"""NumPy forward passes over many posterior draws at once.

Weights carry a leading draw axis: ``W`` has shape (draws, n_in, n_out), so one
batched matrix product per layer evaluates every draw. This is what the
posterior predictive and ``predict`` use: no PyTensor compilation, and NumPy's
BLAS uses every core.
"""

from __future__ import annotations

import numpy as np

from bnn.networks import DenseSpec


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
    outputs = images[None]
    for layer in spec.layer_names:
        outputs = outputs @ weights[f"{layer}_W"] + weights[f"{layer}_b"][:, None, :]
        if layer != "output":
            np.tanh(outputs, out=outputs)
    return outputs


FORWARDS = {"dense": dense_logits}


def class_probabilities(images: np.ndarray, spec, weights: dict[str, np.ndarray]) -> np.ndarray:
    """Softmax class probabilities of shape (draws, n_images, 10)."""
    logits = FORWARDS[spec.name](images.reshape(len(images), -1), spec, weights)
    return softmax(logits)
