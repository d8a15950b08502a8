"""Uncertainty scores and calibration metrics against hand computations and sklearn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score

from bnn.evaluation import uncertainty

N_CLASSES = 10


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20170614)


def with_top(confidence: float, predicted: int) -> np.ndarray:
    """A probability vector whose largest entry is ``confidence`` at class ``predicted``."""
    row = np.full(N_CLASSES, (1.0 - confidence) / (N_CLASSES - 1))
    row[predicted] = confidence
    return row


def summarise(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probabilities, expected entropy and votes from (draws, images, classes)."""
    n_images = draws.shape[1]
    votes = np.zeros((n_images, N_CLASSES), dtype=np.int64)
    for draw in draws.argmax(axis=2):
        votes[np.arange(n_images), draw] += 1
    return draws.mean(axis=0), uncertainty.entropy(draws).mean(axis=0), votes


# --- entropy, mutual information, variation ratio ------------------------------------


def test_entropy_by_hand_and_zeros_give_no_nan():
    # H = 0.5 ln 2 + 2 * 0.25 ln 4 = 0.5 ln 2 + ln 2 = 1.5 ln 2; zeros add nothing.
    probabilities = np.array([[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert uncertainty.entropy(probabilities) == pytest.approx([1.5 * np.log(2), 0.0])


def test_entropy_sums_over_the_chosen_axis():
    probabilities = np.array([[0.5, 1.0], [0.5, 0.0]])  # columns are distributions
    assert uncertainty.entropy(probabilities, axis=0) == pytest.approx([np.log(2), 0.0])


def test_mutual_information_by_hand():
    # H[(0.5, 0.5)] = ln 2; minus the expected entropy 0.2 leaves ln 2 - 0.2.
    mean = np.array([[0.5, 0.5] + [0.0] * 8])
    assert uncertainty.mutual_information(mean, np.array([0.2])) == pytest.approx([np.log(2) - 0.2])


def test_mutual_information_round_off_is_clipped_to_zero():
    mean = np.array([with_top(0.7, 3)])
    slightly_more = uncertainty.predictive_entropy(mean) + 1e-15
    assert uncertainty.mutual_information(mean, slightly_more).tolist() == [0.0]


def test_entropy_and_mutual_information_of_constructed_draws():
    n_draws = 8
    draws = np.zeros((n_draws, 3, N_CLASSES))
    draws[:, 0, 3] = 1.0  # every draw says class 3 for sure
    draws[: n_draws // 2, 1, 0] = 1.0  # half the draws say 0 for sure ...
    draws[n_draws // 2 :, 1, 1] = 1.0  # ... and half say 1 for sure
    draws[:, 2, :] = 1.0 / N_CLASSES  # every draw is uniform
    mean, expected_entropy, votes = summarise(draws)

    total = uncertainty.predictive_entropy(mean)
    epistemic = uncertainty.mutual_information(mean, expected_entropy)

    assert total == pytest.approx([0.0, np.log(2), np.log(N_CLASSES)])
    assert expected_entropy == pytest.approx([0.0, 0.0, np.log(N_CLASSES)])
    assert epistemic == pytest.approx([0.0, np.log(2), 0.0], abs=1e-12)
    # The split image's draws disagree half the time.
    assert uncertainty.variation_ratio(votes)[:2] == pytest.approx([0.0, 0.5])


def test_mutual_information_of_random_draws_is_bounded(rng):
    # 0 <= I <= min(H[mean], log T): the label cannot carry more information
    # about the draw than the log of the number of draws.
    n_draws = 5
    draws = rng.dirichlet(np.full(N_CLASSES, 0.3), size=(n_draws, 200))
    mean, expected_entropy, _ = summarise(draws)

    epistemic = uncertainty.mutual_information(mean, expected_entropy)

    assert np.all(epistemic >= 0.0)
    assert np.all(epistemic <= uncertainty.predictive_entropy(mean) + 1e-12)
    assert np.all(epistemic <= np.log(n_draws) + 1e-12)
    assert epistemic.mean() > 0.1  # disagreeing Dirichlet draws are far from zero


def test_variation_ratio_by_hand():
    # T = 10: 1 - 7/10 = 0.3, 1 - 5/10 = 0.5, 1 - 10/10 = 0.
    votes = np.zeros((3, N_CLASSES), dtype=int)
    votes[0, [0, 1]] = 7, 3
    votes[1, [4, 5]] = 5, 5
    votes[2, 9] = 10
    assert uncertainty.variation_ratio(votes) == pytest.approx([0.3, 0.5, 0.0])


def test_variation_ratio_rejects_a_row_without_votes():
    with pytest.raises(ValueError, match="at least one vote"):
        uncertainty.variation_ratio(np.zeros((2, N_CLASSES), dtype=int))


def test_uncertainty_scores_by_hand_and_ordering():
    n_draws = 4
    draws = np.zeros((n_draws, 2, N_CLASSES))
    draws[:, 0, 2] = 1.0  # certain
    draws[:, 1, :] = disagreeing_rows(n_draws)  # draws that disagree
    mean, expected_entropy, votes = summarise(draws)

    scores = uncertainty.uncertainty_scores(mean, expected_entropy, votes)

    assert list(scores) == ["entropy", "mutual_info", "variation_ratio", "one_minus_confidence"]
    assert scores["one_minus_confidence"] == pytest.approx([0.0, 1.0 - mean[1].max()])
    for name, values in scores.items():
        assert values.shape == (2,)
        assert values[0] == pytest.approx(0.0, abs=1e-12), name
        assert values[1] > values[0] + 0.1, f"{name} is not higher for the unsure image"


def disagreeing_rows(n_rows: int) -> np.ndarray:
    """Rows that each put 0.7 on a different class, so the draws' votes disagree."""
    return np.stack([with_top(0.7, predicted) for predicted in range(n_rows)])


def test_uncertainty_scores_reject_mismatched_rows():
    mean = np.full((3, N_CLASSES), 0.1)
    with pytest.raises(ValueError, match="same images"):
        uncertainty.uncertainty_scores(mean, np.zeros(3), np.ones((2, N_CLASSES), dtype=int))


# --- calibration -------------------------------------------------------------------


def test_reliability_bins_and_ece_by_hand():
    # 5 bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]:
    #   0.3 correct -> bin 1, gap |1 - 0.3| = 0.7
    #   0.5 wrong   -> bin 2, gap |0 - 0.5| = 0.5
    #   0.7 correct -> bin 3, gap |1 - 0.7| = 0.3
    #   0.9 correct, 0.95 wrong -> bin 4: acc 0.5, conf 0.925, gap 0.425
    # ECE = (0.7 + 0.5 + 0.3 + 2 * 0.425) / 5 = 2.35 / 5 = 0.47
    confidences = [0.3, 0.5, 0.7, 0.9, 0.95]
    mean = np.stack([with_top(confidence, 0) for confidence in confidences])
    labels = np.array([0, 1, 0, 0, 1])

    bins = uncertainty.reliability_bins(mean, labels, n_bins=5)

    assert bins.lower == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert bins.upper == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins.count.tolist() == [0, 1, 1, 1, 2]
    assert np.isnan(bins.confidence[0]) and np.isnan(bins.accuracy[0])
    assert bins.confidence[1:] == pytest.approx([0.3, 0.5, 0.7, 0.925])
    assert bins.accuracy[1:] == pytest.approx([1.0, 0.0, 1.0, 0.5])
    assert bins.expected_calibration_error() == pytest.approx(0.47)
    assert uncertainty.expected_calibration_error(mean, labels, n_bins=5) == pytest.approx(0.47)


def test_bins_are_right_closed_and_one_lands_in_the_last_bin():
    edges = uncertainty.reliability_bins(np.array([with_top(0.5, 0)]), np.array([0]), n_bins=5)
    # A confidence equal to an upper edge belongs to that bin, not the next.
    on_edge = edges.upper[1]
    mean = np.stack([with_top(on_edge, 0), with_top(1.0, 0)])

    bins = uncertainty.reliability_bins(mean, np.array([0, 0]), n_bins=5)

    assert bins.count.tolist() == [0, 1, 0, 0, 1]


def test_ece_of_a_calibrated_construction_is_zero():
    # In each group the fraction of correct labels equals the confidence.
    mean_rows, labels = [], []
    for confidence, n_images in [(0.3, 10), (0.5, 4), (0.8, 20), (1.0, 7)]:
        n_correct = round(confidence * n_images)
        mean_rows += [with_top(confidence, 2)] * n_images
        labels += [2] * n_correct + [5] * (n_images - n_correct)

    ece = uncertainty.expected_calibration_error(np.stack(mean_rows), np.array(labels))

    assert ece == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_coin_flips_is_one_half():
    # Confidence 1.0 everywhere, accuracy 50%: one filled bin (the last) with gap 0.5.
    mean = np.zeros((10, N_CLASSES))
    mean[:, 7] = 1.0
    labels = np.array([7] * 5 + [1] * 5)

    bins = uncertainty.reliability_bins(mean, labels)

    assert bins.count.tolist() == [0] * 14 + [10]
    assert uncertainty.expected_calibration_error(mean, labels) == pytest.approx(0.5)


@pytest.mark.parametrize("n_bins", [0, -2, 2.5, True])
def test_reliability_bins_rejects_a_bad_bin_count(n_bins):
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        uncertainty.reliability_bins(np.full((2, N_CLASSES), 0.1), np.array([0, 1]), n_bins)


def test_brier_score_by_hand():
    # (0.3² + 0.2² + 0.1²) = 0.14 and (0.5² + 0.5² + 1²) = 1.5; the mean is 0.82.
    mean = np.zeros((2, N_CLASSES))
    mean[0, :3] = 0.7, 0.2, 0.1
    mean[1, :2] = 0.5, 0.5
    assert uncertainty.brier_score(mean, np.array([0, 2])) == pytest.approx(0.82)


def test_brier_score_matches_sklearn(rng):
    mean = rng.dirichlet(np.full(N_CLASSES, 0.5), size=300)
    labels = rng.integers(0, N_CLASSES, size=300)
    classes = np.arange(N_CLASSES)

    ours = uncertainty.brier_score(mean, labels)

    assert ours == pytest.approx(brier_score_loss(labels, mean, labels=classes))
    assert ours / 2 == pytest.approx(
        brier_score_loss(labels, mean, labels=classes, scale_by_half=True)
    )


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        uncertainty.brier_score(np.full((2, N_CLASSES), 0.1), np.array([0, 10]))


# --- AUROC -------------------------------------------------------------------------


def test_auroc_by_hand_with_a_tie():
    # Positives 0.4 and 0.8 vs negatives 0.1 and 0.4: of the 4 pairs three are
    # ordered right and one is a tie (1/2), so 3.5 / 4 = 0.875.
    scores = np.array([0.1, 0.4, 0.4, 0.8])
    positives = np.array([False, True, False, True])
    assert uncertainty.auroc(scores, positives) == pytest.approx(0.875)
    assert uncertainty.auroc(-scores, positives) == pytest.approx(0.125)


@pytest.mark.parametrize("n_levels", [None, 4])
def test_auroc_matches_sklearn(rng, n_levels):
    positives = rng.random(500) < 0.3
    if n_levels is None:
        scores = rng.normal(size=500) + positives
    else:  # few distinct values: many ties
        scores = rng.integers(0, n_levels, size=500) + positives * rng.integers(0, 2, size=500)

    assert uncertainty.auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores))


@pytest.mark.parametrize("positives", [np.zeros(4, dtype=bool), np.ones(4, dtype=bool)])
def test_auroc_with_one_class_raises(positives):
    with pytest.raises(ValueError, match="AUROC needs both classes"):
        uncertainty.auroc(np.arange(4.0), positives)


def test_auroc_rejects_non_boolean_positives_and_nan_scores():
    with pytest.raises(ValueError, match="boolean mask"):
        uncertainty.auroc(np.arange(4.0), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        uncertainty.auroc(np.array([0.0, np.nan, 1.0]), np.array([True, False, True]))


def test_error_aurocs_by_hand_and_best():
    errors = np.array([False, False, True, True])
    scores = {
        "perfect": np.array([0.1, 0.2, 0.8, 0.9]),  # every error above every correct: 1.0
        "inverted": np.array([0.9, 0.8, 0.2, 0.1]),  # every error below: 0.0
        "tied": np.array([0.5, 0.5, 0.5, 0.5]),  # all ties: 0.5
    }

    aurocs, best = uncertainty.error_aurocs(scores, errors)

    assert aurocs == pytest.approx({"perfect": 1.0, "inverted": 0.0, "tied": 0.5})
    assert best == "perfect"


@pytest.mark.parametrize("errors", [np.zeros(3, dtype=bool), np.ones(3, dtype=bool)])
def test_error_aurocs_without_errors_or_correct_answers_are_null(errors):
    scores = {"entropy": np.array([0.1, 0.2, 0.3]), "mutual_info": np.zeros(3)}

    aurocs, best = uncertainty.error_aurocs(scores, errors)

    assert aurocs == {"entropy": None, "mutual_info": None} and best is None
    assert json.loads(json.dumps(aurocs)) == aurocs  # stays valid JSON


def test_ood_aurocs_by_hand():
    # Out 0.3 beats in 0.1 and 0.2; out 0.15 beats 0.1 but not 0.2: 3 / 4.
    in_scores = {"entropy": np.array([0.1, 0.2]), "mutual_info": np.array([0.0, 0.0])}
    out_scores = {"entropy": np.array([0.3, 0.15]), "mutual_info": np.array([0.0, 1.0, 2.0])}

    aurocs = uncertainty.ood_aurocs(in_scores, out_scores)

    # mutual_info: out 0.0 ties both ins (2 x 1/2), 1.0 and 2.0 beat both: 5 / 6.
    assert aurocs == pytest.approx({"entropy": 0.75, "mutual_info": 5 / 6})


def test_ood_aurocs_need_the_same_score_names():
    with pytest.raises(ValueError, match="same scores"):
        uncertainty.ood_aurocs({"entropy": np.zeros(2)}, {"mutual_info": np.ones(2)})


# --- selective prediction ----------------------------------------------------------


def test_selective_prediction_by_hand_with_ties():
    # The two most certain images tie (one right, one wrong): each counts 1/2.
    # k = 1: 0.5 / 1; k = 2: 1 / 2; k = 3: 2 / 3.
    coverage, accuracy = uncertainty.selective_prediction(
        np.array([0.0, 0.0, 1.0]), np.array([True, False, True]), n_points=None
    )
    assert coverage == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert accuracy == pytest.approx([0.5, 0.5, 2 / 3])


def test_selective_prediction_without_ties_matches_brute_force(rng):
    uncertainty_score = rng.random(50)
    correct = rng.random(50) < 0.7
    ranked = correct[np.argsort(uncertainty_score)]

    coverage, accuracy = uncertainty.selective_prediction(uncertainty_score, correct, None)

    kept = np.arange(1, 51)
    assert coverage == pytest.approx(kept / 50)
    assert accuracy == pytest.approx([ranked[:k].mean() for k in kept])


def test_selective_prediction_ends_at_the_overall_accuracy(rng):
    correct = rng.random(1_000) < 0.9

    coverage, accuracy = uncertainty.selective_prediction(rng.random(1_000), correct)

    assert coverage.size == 101
    assert coverage[0] == pytest.approx(1 / 1_000) and coverage[-1] == 1.0
    assert np.all(np.diff(coverage) > 0)
    assert accuracy[-1] == pytest.approx(correct.mean())


def test_selective_prediction_with_perfectly_ordered_uncertainty(rng):
    correct = rng.random(200) < 0.8
    n_correct = int(correct.sum())
    # Every error is more uncertain than every correct answer.
    score = np.where(correct, rng.random(200), 1.0 + rng.random(200))

    every_k = uncertainty.selective_prediction(score, correct, n_points=None)
    grid = uncertainty.selective_prediction(score, correct)

    coverage, accuracy = every_k
    assert accuracy[n_correct - 1] == 1.0
    assert coverage[n_correct - 1] == pytest.approx(correct.mean())
    assert accuracy[n_correct] < 1.0
    for coverage, accuracy in (every_k, grid):
        assert np.all(np.diff(accuracy) <= 1e-12), "the curve rises somewhere"
        assert np.all(accuracy[coverage <= correct.mean()] == 1.0)


def test_selective_prediction_ignores_the_order_of_tied_images(rng):
    # A score with few levels (like the variation ratio) ties most images.
    score = rng.integers(0, 3, size=300).astype(float)
    correct = rng.random(300) < 0.75
    shuffle = rng.permutation(300)

    original = uncertainty.selective_prediction(score, correct)
    shuffled = uncertainty.selective_prediction(score[shuffle], correct[shuffle])

    np.testing.assert_allclose(original, shuffled, rtol=0, atol=1e-12)


def test_selective_prediction_with_a_constant_score_is_flat():
    correct = np.array([True, True, False, True])
    _, accuracy = uncertainty.selective_prediction(np.zeros(4), correct, n_points=None)
    assert accuracy == pytest.approx([0.75] * 4)


def test_selective_prediction_grid_is_whole_images_when_n_is_small():
    coverage, _ = uncertainty.selective_prediction(np.arange(5.0), np.ones(5, dtype=bool))
    assert coverage == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.mark.parametrize(
    ("score", "correct", "n_points", "message"),
    [
        (np.zeros(0), np.zeros(0, dtype=bool), 101, "non-empty"),
        (np.zeros(3), np.array([1, 0, 1]), 101, "boolean mask"),
        (np.array([0.0, np.nan]), np.array([True, False]), 101, "NaN"),
        (np.zeros(3), np.ones(3, dtype=bool), 1, "n_points must be at least 2"),
    ],
)
def test_selective_prediction_rejects_bad_inputs(score, correct, n_points, message):
    with pytest.raises(ValueError, match=message):
        uncertainty.selective_prediction(score, correct, n_points)


def test_ece_is_scikit_learns_calibration_curve_weighted_by_bin_size():
    rng = np.random.default_rng(5)
    mean = rng.dirichlet(np.full(N_CLASSES, 0.3), size=3000)
    labels = np.array([rng.choice(N_CLASSES, p=row) for row in mean])
    confidence, correct = mean.max(axis=1), mean.argmax(axis=1) == labels
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15)
    edges = np.linspace(0, 1, 16)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=15)
    weights = counts[counts > 0] / len(labels)
    expected = float(np.sum(weights * np.abs(accuracy - mean_confidence)))
    assert uncertainty.expected_calibration_error(mean, labels) == pytest.approx(expected, rel=1e-9)
