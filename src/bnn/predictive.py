"""The posterior predictive: class probabilities and sampled labels for every draw.

Weights are drawn in chunks and every chunk goes through one batched NumPy
forward pass (see :mod:`bnn.forward`), so memory is bounded by the chunk sizes,
not by the number of draws or images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from bnn.atomic import atomic_path
from bnn.forward import class_probabilities
from bnn.posterior import Posterior


@dataclass
class PredictiveSamples:
    """``probabilities`` (draws, images, classes) and ``sampled_labels`` (draws, images)."""

    probabilities: np.ndarray
    sampled_labels: np.ndarray

    @property
    def mean_probabilities(self) -> np.ndarray:
        """The posterior predictive distribution of each image, (images, classes)."""
        return self.probabilities.mean(axis=0, dtype=np.float64)


def sample_categorical(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row of ``probabilities`` (..., classes), by inverting the CDF."""
    cumulative = np.cumsum(probabilities, axis=-1)
    uniform = rng.random((*probabilities.shape[:-1], 1)) * cumulative[..., -1:]
    labels = (cumulative < uniform).sum(axis=-1)
    return np.minimum(labels, probabilities.shape[-1] - 1).astype(np.uint8)


def sample_predictive(
    posterior: Posterior,
    images: np.ndarray,
    n_draws: int,
    rng: np.random.Generator,
    chunk_draws: int = 10,
    chunk_images: int = 2000,
) -> PredictiveSamples:
    """Draw ``n_draws`` weight samples and evaluate every image under each.

    Parameters
    ----------
    posterior : Posterior
        The fitted approximation.
    images : ndarray
        Shape (n_images, 28, 28) or (n_images, 784), scaled like the training data.
    n_draws : int
        Number of posterior draws.
    rng : numpy.random.Generator
        Source of the weight draws and the sampled labels.
    chunk_draws, chunk_images : int
        How many draws and images go through the network at once. The defaults
        are 10 and 2000.
    """
    spec = posterior.spec
    dtype = next(iter(posterior.means.values())).dtype
    images = np.asarray(images, dtype=dtype).reshape(len(images), -1)
    n_images = len(images)
    probabilities = np.empty((n_draws, n_images, 10), dtype=dtype)
    first_draw = 0
    for weights in posterior.draw_chunks(n_draws, chunk_draws, rng):
        draws = slice(first_draw, first_draw + len(next(iter(weights.values()))))
        for first_image in range(0, n_images, chunk_images):
            rows = slice(first_image, first_image + chunk_images)
            probabilities[draws, rows] = class_probabilities(images[rows], spec, weights)
        first_draw = draws.stop
    return PredictiveSamples(probabilities, sample_categorical(probabilities, rng))


def save(samples: PredictiveSamples, labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write the samples and the true labels to an ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            probabilities=samples.probabilities,
            sampled_labels=samples.sampled_labels,
            labels=np.asarray(labels),
        )


def load(path: str | os.PathLike) -> tuple[PredictiveSamples, np.ndarray]:
    """Read what :func:`save` wrote: the samples and the true labels."""
    with np.load(path, allow_pickle=False) as data:
        samples = PredictiveSamples(data["probabilities"], data["sampled_labels"])
        return samples, data["labels"]
