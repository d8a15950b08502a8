"""Metrics against hand-computed examples and SciPy."""

import numpy as np
import pytest
from scipy import stats

from bnn.evaluation import metrics


def test_label_counts_and_mode_by_hand():
    # 3 draws x 2 images
    sampled = np.array([[1, 4], [1, 2], [3, 2]])
    counts = metrics.label_counts(sampled)
    assert counts[0].tolist() == [0, 2, 0, 1, 0, 0, 0, 0, 0, 0]
    assert counts[1].tolist() == [0, 0, 2, 0, 1, 0, 0, 0, 0, 0]
    assert metrics.mode_prediction(counts).tolist() == [1, 2]


def test_mode_ties_go_to_lower_class():
    sampled = np.array([[5], [3]])
    assert metrics.mode_prediction(metrics.label_counts(sampled)).tolist() == [3]


def test_nll_by_hand():
    probs = np.array([[0.5, 0.5] + [0.0] * 8, [0.1, 0.9] + [0.0] * 8])
    labels = np.array([0, 1])
    expected = -(np.log(0.5) + np.log(0.9)) / 2
    assert metrics.negative_log_likelihood(probs, labels) == pytest.approx(expected)


def test_nll_of_a_certain_mistake_is_large_but_finite():
    probs = np.zeros((1, 10))
    probs[0, 3] = 1.0
    nll = metrics.negative_log_likelihood(probs, np.array([0]))
    assert nll == pytest.approx(-np.log(metrics.PROBABILITY_FLOOR))


def test_confusion_matrix_rows_are_actual():
    confusion = metrics.confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]))
    assert confusion[0, 0] == 1 and confusion[0, 1] == 1 and confusion[1, 1] == 1
    assert confusion.sum() == 3


def test_chisquare_matches_scipy_per_image():
    rng = np.random.default_rng(1)
    sampled = rng.integers(0, 10, size=(50, 6))
    sampled[:, 0] = 7  # one perfectly confident image
    chi2 = metrics.chisquare_statistics(metrics.label_counts(sampled))
    for image in range(6):
        counts = np.bincount(sampled[:, image], minlength=10)
        assert chi2[image] == pytest.approx(stats.chisquare(counts).statistic)
    # 50 samples all in one class: sum((50-5)^2/5 + 9*25/5) = 405 + 45 = 450
    assert chi2[0] == pytest.approx(450.0)
