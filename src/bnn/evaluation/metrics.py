"""Scores of a posterior predictive against the true labels."""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn import metrics as sklearn_metrics

from bnn.core.mnist import N_CLASSES
from bnn.predictive.reductions import label_counts  # noqa: F401 -- part of this module's API

# Probabilities below this count as this, so one confident mistake gives a large, finite NLL.
PROBABILITY_FLOOR = 1e-12


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

    Kept by hand, not scikit-learn's ``log_loss``: that clips at machine epsilon
    and renormalises the rows, where this floors each probability at
    :data:`PROBABILITY_FLOOR` and leaves the rest alone, as the committed
    metrics were computed.
    """
    picked = mean_probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, PROBABILITY_FLOOR))))


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, n_classes: int = N_CLASSES):
    """Counts with rows = actual class, columns = predicted class (scikit-learn's)."""
    return sklearn_metrics.confusion_matrix(actual, predicted, labels=np.arange(n_classes))


def chisquare_statistics(counts: np.ndarray) -> np.ndarray:
    """Per image, the chi-square statistic of its sampled-label ``counts`` against uniform.

    This is the 2016 experiment's uncertainty score: a confident network samples
    one label every time (a large statistic); an unsure one spreads its samples
    (a small one).
    """
    return stats.chisquare(counts, axis=1).statistic
