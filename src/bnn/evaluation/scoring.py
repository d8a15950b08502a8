"""The evaluate stage's numbers: scores, calibration, shift and out-of-distribution.

Everything is computed from :class:`~bnn.predictive.chunked.PredictiveSummary`
reductions of the posterior predictive. Two predictions are in play:

- the **mode rule** of the 2016 experiment, the most often sampled label,
  gives ``test_accuracy``, the confusion matrix and the chi-square plot;
- the **argmax of the predictive distribution** (the mean of the draws'
  probabilities) is what calibration is about: ECE, Brier, the error AUROCs,
  the reliability diagram, selective prediction and the shift curve use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnn.evaluation import metrics, uncertainty
from bnn.predictive.chunked import PredictiveSummary

# The score that ranks images in the selective-prediction curve stays the same
# whatever wins the error AUROC, so runs stay comparable.
SCORES = ("entropy", "mutual_info", "variation_ratio", "one_minus_confidence")


@dataclass
class TestEvaluation:
    """What :func:`evaluate_test` returns: scalars, per-image arrays, curves."""

    metrics: dict
    per_image: dict[str, np.ndarray]
    reliability: uncertainty.ReliabilityBins
    selective: dict[str, tuple[np.ndarray, np.ndarray]]  # score -> (coverage, accuracy)


def scores_of(summary: PredictiveSummary) -> dict[str, np.ndarray]:
    """Every per-image uncertainty score of a predictive, higher = more uncertain."""
    return uncertainty.uncertainty_scores(
        summary.mean_probabilities, summary.expected_entropy, summary.vote_counts
    )


def member_disagreement(summary: PredictiveSummary) -> np.ndarray:
    """Per image, the entropy of the mixture's predictive less the members' mean entropy.

    The mutual information over all the draws splits into the members' own
    (``member_entropy - expected_entropy``, weighted) and this, the generalised
    Jensen-Shannon divergence between the members' predictives: zero for one
    posterior, or for identical members.
    """
    disagreement = uncertainty.predictive_entropy(summary.mean_probabilities) - (
        summary.member_entropy
    )
    return np.maximum(disagreement, 0.0)  # round-off below 0 for identical members


def evaluate_test(summary: PredictiveSummary, labels: np.ndarray) -> TestEvaluation:
    """Accuracy, NLL, calibration and error detection on the labelled test set.

    ``error_auroc`` is the best score's AUROC for telling the predictive's
    errors from its correct answers, ``error_auroc_score`` names that score,
    and ``error_auroc_<score>`` gives each one.
    """
    labels = np.asarray(labels).astype(np.int64)
    mean_probabilities = summary.mean_probabilities
    predicted = summary.label_counts.argmax(axis=1)  # the mode rule; ties to the lower class
    correct = predicted == labels
    correct_mean = mean_probabilities.argmax(axis=1) == labels
    chi2 = metrics.chisquare_statistics(summary.label_counts)
    scores = scores_of(summary)
    error_aurocs, best = uncertainty.error_aurocs(scores, ~correct_mean)
    reliability = uncertainty.reliability_bins(mean_probabilities, labels)
    values = {
        "test_accuracy": metrics.accuracy(predicted, labels),
        "test_accuracy_mean_prob": float(correct_mean.mean()),
        "test_nll": metrics.negative_log_likelihood(mean_probabilities, labels),
        "test_ece": reliability.expected_calibration_error(),
        "test_brier": uncertainty.brier_score(mean_probabilities, labels),
        "test_errors": int((~correct).sum()),
        "test_images": len(labels),
        "posterior_draws": summary.n_draws,
        "error_auroc": error_aurocs[best] if best else None,
        "error_auroc_score": best,
        **{f"error_auroc_{name}": value for name, value in error_aurocs.items()},
        **{f"test_mean_{name}": float(values.mean()) for name, values in scores.items()},
        # The part of the mutual information due to members disagreeing (0 for one posterior).
        "test_mean_member_disagreement": float(member_disagreement(summary).mean()),
        "chi2_median_correct": _median(chi2[correct]),
        "chi2_median_errors": _median(chi2[~correct]),
    }
    per_image = {
        "predicted": predicted,
        "correct": correct,
        "correct_mean_prob": correct_mean,
        "chi2": chi2,
        "confusion": metrics.confusion_matrix(labels, predicted),
        **scores,
    }
    selective = {
        name: uncertainty.selective_prediction(scores[name], correct_mean) for name in SCORES
    }
    return TestEvaluation(values, per_image, reliability, selective)


def shift_rows(summaries: dict[float, PredictiveSummary], labels: np.ndarray) -> list[dict]:
    """Per rotation angle: accuracy, ECE, NLL, Brier, mean entropy and mean MI."""
    labels = np.asarray(labels).astype(np.int64)
    rows = []
    for angle, summary in sorted(summaries.items()):
        probabilities = summary.mean_probabilities
        scores = scores_of(summary)
        rows.append(
            {
                "angle": angle,
                "accuracy": metrics.accuracy(probabilities.argmax(axis=1), labels),
                "ece": uncertainty.expected_calibration_error(probabilities, labels),
                "nll": metrics.negative_log_likelihood(probabilities, labels),
                "brier": uncertainty.brier_score(probabilities, labels),
                "mean_entropy": float(scores["entropy"].mean()),
                "mean_mutual_info": float(scores["mutual_info"].mean()),
            }
        )
    return rows


def ood_metrics(
    test_scores: dict[str, np.ndarray], ood_summaries: dict[str, PredictiveSummary]
) -> dict[str, float]:
    """``ood_auroc_<set>_<score>`` for each set, and ``ood_auroc_<set>`` for its best score."""
    values = {}
    for name, summary in ood_summaries.items():
        aurocs = uncertainty.ood_aurocs(test_scores, scores_of(summary))
        values[f"ood_auroc_{name}"] = max(aurocs.values())
        values |= {f"ood_auroc_{name}_{score}": value for score, value in aurocs.items()}
    return values


def _median(values: np.ndarray) -> float | None:
    # JSON has no NaN: an empty group (a perfect classifier has no errors) is null.
    return float(np.median(values)) if len(values) else None
