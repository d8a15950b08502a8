"""The evaluate stage's numbers on constructed predictives."""

import numpy as np
import pytest

from bnn.evaluation import scoring, uncertainty
from bnn.evaluation.metrics import label_counts
from bnn.evaluation.uncertainty import entropy
from bnn.predictive.chunked import PredictiveSummary


def summary_of(probabilities: np.ndarray, sampled: np.ndarray) -> PredictiveSummary:
    """The summary of explicit draws: ``probabilities`` (T, n, 10), ``sampled`` (T, n)."""
    return PredictiveSummary(
        mean_probabilities=probabilities.mean(axis=0),
        expected_entropy=entropy(probabilities).mean(axis=0),
        vote_counts=label_counts(probabilities.argmax(axis=-1)),
        label_counts=label_counts(sampled),
        n_draws=len(probabilities),
    )


def test_both_accuracy_rules_and_calibration_keys():
    labels = np.array([0, 1, 2, 3])
    sampled = np.array([[0, 1, 2, 0], [0, 1, 2, 0], [0, 5, 2, 3]])
    probs = np.full((4, 10), 0.01)
    probs[np.arange(4), [0, 5, 7, 3]] = 0.91
    result = scoring.evaluate_test(summary_of(np.stack([probs] * 3), sampled), labels)
    scores = result.metrics
    assert scores["test_accuracy"] == pytest.approx(0.75)  # modes 0, 1, 2, 0
    assert scores["test_accuracy_mean_prob"] == pytest.approx(0.5)  # argmax 0, 5, 7, 3
    assert scores["test_errors"] == 1
    # Every image has confidence 0.91, half are right: ECE = |0.5 - 0.91|.
    assert scores["test_ece"] == pytest.approx(0.41)
    assert scores["test_brier"] == pytest.approx(uncertainty.brier_score(probs, labels))
    assert result.per_image["predicted"].tolist() == [0, 1, 2, 0]
    assert result.per_image["confusion"].sum() == 4
    # Identical draws: no disagreement between them, so no epistemic uncertainty.
    assert scores["test_mean_mutual_info"] == pytest.approx(0.0, abs=1e-12)


def test_error_auroc_names_the_best_score():
    # Draws that disagree on the wrong images only: MI finds the errors, confidence cannot
    # (every image has the same top probability).
    labels = np.array([0, 0, 0, 0])
    sure = np.eye(10)[0] * 0.6 + 0.4 / 10
    split = np.stack([np.eye(10)[1] * 0.6 + 0.4 / 10, np.eye(10)[1] * 0.6 + 0.4 / 10])
    probabilities = np.stack([[sure, sure, split[0], split[0]], [sure, sure, split[1], split[1]]])
    probabilities[1, 2:] = np.eye(10)[2] * 0.6 + 0.4 / 10  # the second draw says 2 on those
    result = scoring.evaluate_test(summary_of(probabilities, probabilities.argmax(-1)), labels)
    assert result.metrics["error_auroc_mutual_info"] == pytest.approx(1.0)
    assert result.metrics["error_auroc"] == pytest.approx(1.0)
    assert result.metrics["error_auroc_score"] in ("entropy", "mutual_info", "variation_ratio")


def test_no_errors_gives_null_error_scores():
    labels = np.array([4, 4])
    probs = np.eye(10)[[4, 4]][None].repeat(5, axis=0)
    result = scoring.evaluate_test(summary_of(probs, np.full((5, 2), 4)), labels)
    assert result.metrics["test_accuracy"] == 1.0
    assert result.metrics["chi2_median_errors"] is None
    assert result.metrics["error_auroc"] is None and result.metrics["error_auroc_score"] is None


def test_shift_rows_follow_the_angles():
    labels = np.array([0, 1])
    right = np.eye(10)[[0, 1]] * 0.9 + 0.01
    wrong = np.eye(10)[[1, 0]] * 0.9 + 0.01
    rows = scoring.shift_rows(
        {
            90.0: summary_of(wrong[None], wrong[None].argmax(-1)),
            0.0: summary_of(right[None], labels[None]),
        },
        labels,
    )
    assert [row["angle"] for row in rows] == [0.0, 90.0]
    assert rows[0]["accuracy"] == 1.0 and rows[1]["accuracy"] == 0.0
    assert rows[0]["nll"] == pytest.approx(-np.log(0.91))
    assert rows[1]["ece"] == pytest.approx(0.91)


def test_ood_aurocs_rank_noise_above_digits():
    sure = np.eye(10)[[3, 7, 1]][None] * 0.98 + 0.002
    unsure = np.full((1, 3, 10), 0.1)
    values = scoring.ood_metrics(
        scoring.scores_of(summary_of(sure, sure.argmax(-1))),
        {"noise": summary_of(unsure, np.zeros((1, 3), int))},
    )
    assert values["ood_auroc_noise_entropy"] == 1.0
    assert values["ood_auroc_noise"] == 1.0
