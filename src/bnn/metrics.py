"""Scores of a posterior predictive against the true labels."""

from __future__ import annotations

import numpy as np
from scipy import stats

N_CLASSES = 10
# Probabilities below this count as this, so one confident mistake gives a large, finite NLL.
PROBABILITY_FLOOR = 1e-12


def label_counts(sampled_labels: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """How often each class was sampled for each image: (images, classes) from (draws, images)."""
    n_images = sampled_labels.shape[1]
    offsets = np.arange(n_images)[None, :] * n_classes
    flat = np.bincount((offsets + sampled_labels).ravel(), minlength=n_images * n_classes)
    return flat.reshape(n_images, n_classes)


def mode_prediction(counts: np.ndarray) -> np.ndarray:
    """The most often sampled label of each image (the 2016 rule); ties go to the lower class.

    ``counts`` is (images, classes), as from :func:`label_counts`.
    """
    return np.asarray(counts).argmax(axis=1)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images with ``predicted == labels``."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def negative_log_likelihood(mean_probabilities: np.ndarray, labels: np.ndarray) -> float:
    r"""Mean negative log-likelihood of the true labels under the predictive.

    .. math:: -\frac{1}{n} \sum_i \log \bar p_i(y_i)
    """
    picked = mean_probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, PROBABILITY_FLOOR))))


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int = N_CLASSES):
    """Counts with rows = actual class, columns = predicted class."""
    flat = np.bincount(np.asarray(actual) * n_classes + predicted, minlength=n_classes**2)
    return flat.reshape(n_classes, n_classes)


def chisquare_statistics(counts: np.ndarray) -> np.ndarray:
    """Per image, the chi-square statistic of its sampled-label ``counts`` against uniform.

    This is the 2016 experiment's uncertainty score: a confident network samples
    one label every time (a large statistic); an unsure one spreads its samples
    (a small one).
    """
    return stats.chisquare(counts, axis=1).statistic
