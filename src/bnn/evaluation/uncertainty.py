r"""Uncertainty scores and calibration metrics of a posterior predictive.

Everything here is plain NumPy on summaries of a posterior predictive over
:math:`T` posterior draws for :math:`n` images:

``mean_probabilities``
    (n, n_classes) float, the predictive distribution
    :math:`\bar p_i = \frac{1}{T} \sum_t p_{ti}`, the mean over draws of the
    softmax probabilities;
``expected_entropy``
    (n,) float, :math:`\frac{1}{T} \sum_t H[p_{ti}]`, the mean over draws of
    each draw's entropy, in nats;
``vote_counts``
    (n, n_classes) int, how many draws had each class as their argmax (each
    row sums to :math:`T`);
``labels``
    (n,) int, the true classes.

Every uncertainty score is oriented the same way: higher means more uncertain.
Scalars that can be undefined are ``None`` rather than NaN, because JSON has
no NaN and these values end up in metrics files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from bnn.predictive.reductions import entropy

DEFAULT_BINS = 15


def predictive_entropy(mean_probabilities: np.ndarray) -> np.ndarray:
    r"""Entropy of the predictive distribution: total uncertainty.

    .. math:: H[\bar p_i] = -\sum_k \bar p_{ik} \log \bar p_{ik}

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes).

    Returns
    -------
    np.ndarray
        Entropy of each image in nats, shape (n,), between 0 and
        :math:`\log n_\text{classes}`.
    """
    return entropy(_check_probabilities(mean_probabilities), axis=1)


def mutual_information(mean_probabilities: np.ndarray, expected_entropy: np.ndarray) -> np.ndarray:
    r"""Mutual information between the label and the weights: epistemic uncertainty.

    The BALD score (Houlsby et al. 2011): the entropy of the mean prediction
    minus the mean entropy of the draws' predictions,

    .. math:: I_i = H[\bar p_i] - \frac{1}{T} \sum_t H[p_{ti}] \ \ge 0,

    large when the draws are individually confident but disagree with each
    other. It is zero when every draw predicts the same distribution.

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes).
    expected_entropy : np.ndarray
        Mean over draws of each draw's entropy in nats, shape (n,).

    Returns
    -------
    np.ndarray
        Mutual information in nats, shape (n,). Jensen's inequality makes it
        non-negative; values below zero can only be floating-point round-off
        and are clipped to 0.
    """
    mean_probabilities = _check_probabilities(mean_probabilities)
    expected_entropy = _check_per_image(
        expected_entropy, "expected_entropy", len(mean_probabilities)
    )
    return np.maximum(predictive_entropy(mean_probabilities) - expected_entropy, 0.0)


def variation_ratio(vote_counts: np.ndarray) -> np.ndarray:
    r"""Fraction of draws that disagree with the most common vote.

    .. math:: v_i = 1 - \frac{\max_k c_{ik}}{T}

    where :math:`c_{ik}` counts the draws whose argmax is class :math:`k`.

    Parameters
    ----------
    vote_counts : np.ndarray
        Votes per class, shape (n, n_classes); every row sums to the number
        of draws :math:`T`.

    Returns
    -------
    np.ndarray
        Variation ratio in :math:`[0, 1 - 1/n_\text{classes}]`, shape (n,).

    Raises
    ------
    ValueError
        If ``vote_counts`` is not 2-D, has negative counts or an empty row.
    """
    vote_counts = np.asarray(vote_counts)
    if vote_counts.ndim != 2:
        raise ValueError(
            f"vote_counts must be (n_images, n_classes), got shape {vote_counts.shape}; "
            f"count each image's argmax votes per class (bnn.evaluation.metrics.label_counts)"
        )
    n_draws = vote_counts.sum(axis=1)
    if np.any(vote_counts < 0) or np.any(n_draws <= 0):
        raise ValueError("vote_counts must be non-negative with at least one vote per image")
    return 1.0 - vote_counts.max(axis=1) / n_draws


def uncertainty_scores(
    mean_probabilities: np.ndarray, expected_entropy: np.ndarray, vote_counts: np.ndarray
) -> dict[str, np.ndarray]:
    """All per-image uncertainty scores, each oriented so that higher is more uncertain.

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes).
    expected_entropy : np.ndarray
        Mean over draws of each draw's entropy in nats, shape (n,).
    vote_counts : np.ndarray
        Argmax votes per class, shape (n, n_classes).

    Returns
    -------
    dict of str to np.ndarray
        Arrays of shape (n,): ``entropy`` (:func:`predictive_entropy`),
        ``mutual_info`` (:func:`mutual_information`), ``variation_ratio``
        (:func:`variation_ratio`) and ``one_minus_confidence``, one minus the
        largest predictive probability.
    """
    mean_probabilities = _check_probabilities(mean_probabilities)
    votes = variation_ratio(vote_counts)
    if votes.shape != (len(mean_probabilities),):
        raise ValueError(
            f"vote_counts has {votes.shape[0]} rows but mean_probabilities has "
            f"{len(mean_probabilities)}; pass both for the same images"
        )
    return {
        "entropy": predictive_entropy(mean_probabilities),
        "mutual_info": mutual_information(mean_probabilities, expected_entropy),
        "variation_ratio": votes,
        "one_minus_confidence": 1.0 - mean_probabilities.max(axis=1),
    }


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Accuracy and confidence of the predictions in equal-width confidence bins.

    All arrays have shape (n_bins,). Bin ``b`` holds the images whose top
    probability :math:`c` satisfies ``lower[b] < c <= upper[b]`` (right-closed);
    the first bin also holds :math:`c = 0`, so every confidence in [0, 1]
    falls in exactly one bin, and a confidence of exactly 1.0 falls in the
    last.

    Attributes
    ----------
    lower, upper : np.ndarray
        Bin edges.
    count : np.ndarray
        Number of images in each bin (int).
    confidence : np.ndarray
        Mean top probability of the images in each bin; NaN for an empty bin.
    accuracy : np.ndarray
        Fraction of the images in each bin whose argmax is the true label;
        NaN for an empty bin.
    """

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    def expected_calibration_error(self) -> float:
        r"""Count-weighted mean gap between accuracy and confidence.

        .. math::

            \mathrm{ECE} = \sum_b \frac{n_b}{n}
                \left| \mathrm{acc}_b - \mathrm{conf}_b \right|

        Empty bins have weight zero and are left out.
        """
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(weights * gaps))


def reliability_bins(
    mean_probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS
) -> ReliabilityBins:
    """Bin the predictions by their top probability, for a reliability diagram.

    The prediction of an image is the argmax of its predictive distribution
    and its confidence the largest probability. Bins are ``n_bins`` equal
    widths over [0, 1], right-closed: see :class:`ReliabilityBins`.

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes), n >= 1.
    labels : np.ndarray
        True classes, shape (n,).
    n_bins : int
        Number of bins. The default is 15, as in Guo et al. (2017).

    Returns
    -------
    ReliabilityBins
        Edges, counts, mean confidence and accuracy per bin.

    Raises
    ------
    ValueError
        If ``n_bins`` is not a positive integer or the inputs are malformed.
    """
    mean_probabilities = _check_probabilities(mean_probabilities)
    labels = _check_labels(labels, mean_probabilities)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = mean_probabilities.max(axis=1)
    correct = mean_probabilities.argmax(axis=1) == labels
    # side="left" counts the inner edges strictly below c, which is the index of
    # the right-closed bin (lower, upper] holding c; 0 and 1 land in the end bins.
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=n_bins)
    return ReliabilityBins(
        lower=edges[:-1],
        upper=edges[1:],
        count=count,
        confidence=_bin_means(index, confidence, count),
        accuracy=_bin_means(index, correct.astype(float), count),
    )


def expected_calibration_error(
    mean_probabilities: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS
) -> float:
    r"""Expected calibration error of the top-label confidence.

    The definition of Guo et al. (2017) and Ovadia et al. (2019): with the
    images grouped into ``n_bins`` equal-width confidence bins :math:`B_b`
    (see :func:`reliability_bins`),

    .. math::

        \mathrm{ECE} = \sum_b \frac{|B_b|}{n}
            \left| \mathrm{acc}(B_b) - \mathrm{conf}(B_b) \right|

    where the accuracy uses the argmax of ``mean_probabilities``.

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes).
    labels : np.ndarray
        True classes, shape (n,).
    n_bins : int
        Number of bins. The default is 15.

    Returns
    -------
    float
        ECE in [0, 1]; 0 is perfectly calibrated.
    """
    return reliability_bins(mean_probabilities, labels, n_bins).expected_calibration_error()


def brier_score(mean_probabilities: np.ndarray, labels: np.ndarray) -> float:
    r"""Multi-class Brier score: mean squared distance to the one-hot label.

    .. math:: \mathrm{BS} = \frac{1}{n} \sum_i \sum_k \left(\bar p_{ik} - [y_i = k]\right)^2

    It ranges over [0, 2]: scikit-learn's ``brier_score_loss`` over every class,
    which halves the score only for binary problems (``scale_by_half="auto"``).

    Parameters
    ----------
    mean_probabilities : np.ndarray
        Predictive distribution, shape (n, n_classes).
    labels : np.ndarray
        True classes, shape (n,).

    Returns
    -------
    float
        The Brier score; lower is better.
    """
    mean_probabilities = _check_probabilities(mean_probabilities)
    labels = _check_labels(labels, mean_probabilities)
    classes = np.arange(mean_probabilities.shape[1])
    # Rows averaged from float32 softmaxes sum to 1 only to float32 precision, which
    # scikit-learn's float64 check reports; the renormalisation moves them by ~1e-7.
    rows = mean_probabilities / mean_probabilities.sum(axis=1, keepdims=True)
    return float(brier_score_loss(labels, rows, labels=classes))


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    r"""Area under the ROC curve of ``scores`` for picking out the ``positives``.

    scikit-learn's ``roc_auc_score``, with the inputs checked first so that a bad
    call names its problem: the probability that a random positive scores higher
    than a random negative, a tie counting one half. 0.5 is chance, 1 a perfect
    separation.

    Parameters
    ----------
    scores : np.ndarray
        One score per item, shape (n,); higher should mean "positive". NaN is
        not allowed; infinities are ranked as usual.
    positives : np.ndarray
        Boolean mask of the positive items, shape (n,).

    Returns
    -------
    float
        The AUROC in [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, ``positives`` is not boolean, ``scores`` holds
        NaN, or either class is empty.
    """
    scores = np.asarray(scores, dtype=float)
    positives = np.asarray(positives)
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(
            f"scores and positives must be 1-D arrays of the same length, got shapes "
            f"{scores.shape} and {positives.shape}"
        )
    if positives.dtype != bool:
        raise ValueError(
            f"positives must be a boolean mask, got dtype {positives.dtype}; pass e.g. "
            f"predicted != labels"
        )
    if np.any(np.isnan(scores)):
        raise ValueError("scores hold NaN; an AUROC needs every item ranked")
    n_positive = int(positives.sum())
    n_negative = positives.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError(
            f"AUROC needs both classes, got {n_positive} positives and {n_negative} "
            f"negatives; it is undefined when one is empty"
        )
    return float(roc_auc_score(positives, scores))


def error_aurocs(
    scores: Mapping[str, np.ndarray], errors: np.ndarray
) -> tuple[dict[str, float | None], str | None]:
    """How well each uncertainty score tells wrong answers from right ones.

    Parameters
    ----------
    scores : mapping of str to np.ndarray
        Uncertainty scores by name, each of shape (n,), higher = more
        uncertain (as from :func:`uncertainty_scores`).
    errors : np.ndarray
        Boolean mask of the wrongly classified images, shape (n,).

    Returns
    -------
    aurocs : dict of str to float or None
        :func:`auroc` of each score with the errors as positives. When there
        are no errors, or no correct answers, the AUROC is undefined and
        every value is ``None`` (JSON has no NaN).
    best : str or None
        Name of the score with the highest AUROC (the first in ``scores``
        order on a tie), or ``None`` when the AUROCs are undefined.
    """
    errors = np.asarray(errors)
    if errors.dtype != bool:
        raise ValueError(f"errors must be a boolean mask, got dtype {errors.dtype}")
    if not errors.any() or errors.all():
        return dict.fromkeys(scores), None
    aurocs = {name: auroc(values, errors) for name, values in scores.items()}
    best = max(aurocs, key=aurocs.__getitem__) if aurocs else None
    return aurocs, best


def selective_prediction(
    uncertainty: np.ndarray, correct: np.ndarray, n_points: int | None = 101
) -> tuple[np.ndarray, np.ndarray]:
    r"""Accuracy on the most certain images, as a function of how many are kept.

    The images are sorted by ``uncertainty`` ascending and the first
    :math:`k` kept; the coverage is :math:`k / n` and the accuracy the
    fraction of the kept images that are correct. A useful uncertainty gives
    a curve that falls as the coverage grows.

    Ties: images with equal uncertainty cannot be ordered, so when the cut
    falls inside a group of ties, the group counts with its mean accuracy,

    .. math:: \mathrm{acc}(k) = \frac{C_{<g} + (k - s_g)\, C_g / n_g}{k},

    where the cut falls in tie group :math:`g` of size :math:`n_g`, holding
    :math:`C_g` correct images and starting after :math:`s_g` more certain
    images, which hold :math:`C_{<g}` correct ones. This is the expected
    accuracy over random tie-breaking, so the curve does not depend on the
    order of the images; a score with many ties (the variation ratio is 0
    for most images) gives a straight segment across each tie group.

    Parameters
    ----------
    uncertainty : np.ndarray
        One score per image, shape (n,), higher = more uncertain; no NaN.
    correct : np.ndarray
        Boolean mask of the correctly classified images, shape (n,).
    n_points : int or None
        Number of coverages on an even grid from :math:`1/n` to 1; each is
        rounded to a whole number of images and repeats are dropped, so fewer
        points come back when ``n < n_points``. ``None`` gives every
        coverage :math:`k/n`. The default is 101.

    Returns
    -------
    coverage : np.ndarray
        Fractions of images kept, increasing, from :math:`1/n` to exactly 1.0.
    accuracy : np.ndarray
        Accuracy of the kept images at each coverage.

    Raises
    ------
    ValueError
        If the inputs are empty, differ in shape, ``correct`` is not boolean,
        ``uncertainty`` holds NaN, or ``n_points`` is below 2.
    """
    uncertainty = np.asarray(uncertainty, dtype=float)
    correct = np.asarray(correct)
    if uncertainty.ndim != 1 or correct.shape != uncertainty.shape or uncertainty.size == 0:
        raise ValueError(
            f"uncertainty and correct must be non-empty 1-D arrays of the same length, "
            f"got shapes {uncertainty.shape} and {correct.shape}"
        )
    if correct.dtype != bool:
        raise ValueError(f"correct must be a boolean mask, got dtype {correct.dtype}")
    if np.any(np.isnan(uncertainty)):
        raise ValueError("uncertainty holds NaN; every image needs a score to be ranked")
    n_images = uncertainty.size
    if n_points is None:
        kept = np.arange(1, n_images + 1)
    elif n_points < 2:
        raise ValueError(f"n_points must be at least 2 (or None), got {n_points}")
    else:
        kept = np.unique(np.rint(np.linspace(1, n_images, n_points)).astype(np.int64))

    order = np.argsort(uncertainty, kind="stable")
    sorted_uncertainty = uncertainty[order]
    correct_before = np.concatenate([[0.0], np.cumsum(correct[order])])
    # Sorted positions where a new tie group starts, and the group of each position.
    starts = np.flatnonzero(np.r_[True, sorted_uncertainty[1:] != sorted_uncertainty[:-1]])
    ends = np.r_[starts[1:], n_images]
    group = np.searchsorted(starts, kept - 1, side="right") - 1
    start, end = starts[group], ends[group]
    group_accuracy = (correct_before[end] - correct_before[start]) / (end - start)
    kept_correct = correct_before[start] + (kept - start) * group_accuracy
    return kept / n_images, kept_correct / kept


def ood_aurocs(
    in_scores: Mapping[str, np.ndarray], out_scores: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """How well each uncertainty score tells out-of-distribution inputs from test digits.

    Parameters
    ----------
    in_scores : mapping of str to np.ndarray
        Uncertainty scores by name of the in-distribution images (e.g. the
        MNIST test set), each 1-D.
    out_scores : mapping of str to np.ndarray
        The same scores of the out-of-distribution images, with the same
        names; the two sets may differ in size.

    Returns
    -------
    dict of str to float
        :func:`auroc` of each score with the out-of-distribution images as
        positives: 1 when every one of them is more uncertain than every
        test digit, 0.5 for no separation.

    Raises
    ------
    ValueError
        If the two mappings do not have the same names, or a set is empty.
    """
    if set(in_scores) != set(out_scores):
        raise ValueError(
            f"in_scores and out_scores must name the same scores, got {sorted(in_scores)} "
            f"and {sorted(out_scores)}; compute both with uncertainty_scores"
        )
    aurocs = {}
    for name, inside in in_scores.items():
        inside = np.asarray(inside, dtype=float).ravel()
        outside = np.asarray(out_scores[name], dtype=float).ravel()
        is_outside = np.r_[np.zeros(inside.size, dtype=bool), np.ones(outside.size, dtype=bool)]
        aurocs[name] = auroc(np.concatenate([inside, outside]), is_outside)
    return aurocs


def _bin_means(index: np.ndarray, values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per bin, NaN where a bin is empty."""
    sums = np.bincount(index, weights=values, minlength=count.size)
    return np.divide(sums, count, out=np.full(count.size, np.nan), where=count > 0)


def _check_probabilities(mean_probabilities: np.ndarray) -> np.ndarray:
    mean_probabilities = np.asarray(mean_probabilities, dtype=float)
    if mean_probabilities.ndim != 2 or mean_probabilities.shape[0] == 0:
        raise ValueError(
            f"mean_probabilities must be a non-empty (n_images, n_classes) array, got shape "
            f"{mean_probabilities.shape}"
        )
    if not np.all(np.isfinite(mean_probabilities)):
        raise ValueError("mean_probabilities hold NaN or inf; check the predictive draws")
    return mean_probabilities


def _check_per_image(values: np.ndarray, name: str, n_images: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != (n_images,):
        raise ValueError(f"{name} must have shape ({n_images},), one per image, got {values.shape}")
    return values


def _check_labels(labels: np.ndarray, mean_probabilities: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    n_images, n_classes = mean_probabilities.shape
    if labels.shape != (n_images,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be {n_images} integers, one per row of mean_probabilities, got "
            f"shape {labels.shape} and dtype {labels.dtype}"
        )
    if np.any((labels < 0) | (labels >= n_classes)):
        raise ValueError(f"labels must lie in [0, {n_classes}), one class per column")
    return labels
