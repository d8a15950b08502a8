r"""The uncertainty flag saved with the model: which predictions to hand to a person.

A :class:`FlagRule` flags an image when one uncertainty score (by default the
predictive entropy) is above a threshold. The threshold is chosen on the
validation set as the loosest one that still meets a target accuracy on the
images it keeps:

.. math:: t^* = \max \{ t : \operatorname{acc}(\{i : s_i \le t\}) \ge a \}

so that as few images as possible are flagged. The rule is saved as
``flag.json`` beside the posterior and read back by ``predict``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bnn.core.atomic import write_text
from bnn.core.errors import ConfigError, DataError
from bnn.evaluation.scoring import SCORES, scores_of
from bnn.predictive.chunked import summarise_predictive
from bnn.predictive.ensemble import Ensemble
from bnn.predictive.posterior import Posterior

FLAG_FILE = "flag.json"
DEFAULT_TARGET_ACCURACY = 0.995
_REFIT_HINT = "rebuild it with `dvc repro -f fit_advi`"


@dataclass(frozen=True)
class FlagSettings:
    """How the fit stage chooses the rule: ``flag`` in ``conf/config.yaml`` (a test keeps both).

    Attributes
    ----------
    score : str
        The uncertainty score to threshold, one of :data:`bnn.evaluation.scoring.SCORES`.
    target_accuracy : float
        Accuracy the kept validation images must reach, in (0, 1].
    draws : int
        Posterior draws of the validation predictive.
    """

    score: str = "entropy"
    target_accuracy: float = DEFAULT_TARGET_ACCURACY
    draws: int = 50


@dataclass(frozen=True)
class FlagRule:
    """Flag an image when ``score > threshold``.

    Attributes
    ----------
    score : str
        Name of the uncertainty score, one of :data:`bnn.evaluation.scoring.SCORES`.
    threshold : float
        Images with a score at most this are kept; ``-inf`` flags every image.
    target_accuracy : float
        The accuracy the kept validation images had to reach.
    valid_accuracy_kept : float or None
        Accuracy of the validation images the rule keeps; ``None`` when it
        keeps none.
    valid_flagged_fraction : float
        Fraction of the validation images the rule flags.
    """

    score: str
    threshold: float
    target_accuracy: float
    valid_accuracy_kept: float | None
    valid_flagged_fraction: float

    def flags(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Boolean array, True where ``scores[self.score]`` is above the threshold."""
        return np.asarray(scores[self.score]) > self.threshold

    def to_dict(self) -> dict:
        """Plain, strict-JSON values: a threshold of ``-inf`` becomes ``None``."""
        values = asdict(self)
        if math.isinf(self.threshold):
            values["threshold"] = None
        return values

    @classmethod
    def from_dict(cls, values: dict) -> FlagRule:
        """The inverse of :meth:`to_dict`."""
        threshold = values["threshold"]
        return cls(
            score=str(values["score"]),
            threshold=-math.inf if threshold is None else float(threshold),
            target_accuracy=float(values["target_accuracy"]),
            valid_accuracy_kept=_optional_float(values["valid_accuracy_kept"]),
            valid_flagged_fraction=float(values["valid_flagged_fraction"]),
        )


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def choose_threshold(
    scores: dict[str, np.ndarray], correct: np.ndarray, score: str, target_accuracy: float
) -> FlagRule:
    """The threshold that flags the fewest validation images while meeting the target accuracy.

    The images are sorted by ``scores[score]``, most certain first; the kept
    set is the longest prefix whose accuracy is at least ``target_accuracy``,
    and the threshold is the score of its last image (the smallest threshold
    that keeps that set). Accuracy is not
    monotonic along the prefix, so every prefix is tried, not just the first
    that fails.

    Images with equal scores are kept or flagged together: a rule ``score >
    threshold`` cannot tell them apart, so prefixes end only between distinct
    scores. If no prefix reaches the target, not even the most certain group,
    the threshold is ``-inf`` and every image is flagged. If all images
    together reach it, the threshold is the largest score and no validation
    image is flagged.

    Parameters
    ----------
    scores : dict of str to numpy.ndarray
        Per-image uncertainty scores (higher = more uncertain), each of shape
        (n,), as from :func:`bnn.evaluation.scoring.scores_of`.
    correct : numpy.ndarray
        Boolean (n,): whether each image's prediction is right.
    score : str
        Which entry of ``scores`` to threshold.
    target_accuracy : float
        Accuracy the kept images must reach, in (0, 1].

    Returns
    -------
    FlagRule
        The rule, with the accuracy and flagged fraction it gives on these images.

    Raises
    ------
    ConfigError
        If ``score`` is not in ``scores`` or ``target_accuracy`` is outside (0, 1].
    ValueError
        If the score and ``correct`` differ in shape, are empty, or the score
        is not finite.
    """
    if score not in scores:
        raise ConfigError(f"unknown flag score {score!r}; choose one of {', '.join(scores)}")
    if not 0 < target_accuracy <= 1:
        raise ConfigError(
            f"flag target accuracy must be in (0, 1], got {target_accuracy}; "
            f"try {DEFAULT_TARGET_ACCURACY}"
        )
    values = np.asarray(scores[score], dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if values.ndim != 1 or values.shape != correct.shape or len(values) == 0:
        raise ValueError(
            f"scores[{score!r}] {values.shape} and correct {correct.shape} must be the "
            "same non-empty 1-D shape, one entry per validation image"
        )
    if not np.isfinite(values).all():
        raise ValueError(f"scores[{score!r}] holds NaN or infinite values; check the predictive")
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    kept_correct = np.cumsum(correct[order])
    # Prefixes may only end where the next image has a larger score (or at the end).
    ends = np.flatnonzero(np.append(sorted_values[1:] != sorted_values[:-1], True))
    kept = ends + 1
    meets = kept_correct[ends] / kept >= target_accuracy
    n_images = len(values)
    if not meets.any():
        return FlagRule(score, -math.inf, float(target_accuracy), None, 1.0)
    best = ends[np.flatnonzero(meets)[-1]]
    n_kept = best + 1
    return FlagRule(
        score=score,
        threshold=float(sorted_values[best]),
        target_accuracy=float(target_accuracy),
        valid_accuracy_kept=float(kept_correct[best] / n_kept),
        valid_flagged_fraction=float((n_images - n_kept) / n_images),
    )


def rule_from_validation(
    posterior: Posterior | Ensemble,
    images: np.ndarray,
    labels: np.ndarray,
    draws: int,
    seed: int,
    score: str = FlagSettings.score,
    target_accuracy: float = FlagSettings.target_accuracy,
    chunk_images: int | None = None,
) -> FlagRule:
    """Choose the flag rule from the posterior predictive on labelled validation images.

    A prediction is the argmax of the predictive distribution (the mean of
    the draws' probabilities), as ``predict`` reports it.

    Parameters
    ----------
    posterior : Posterior or Ensemble
        The fitted approximation, or an ensemble of them (its mixture predictive).
    images : numpy.ndarray
        Validation images, (n, 784) or (n, 28, 28), scaled like the training data.
    labels : numpy.ndarray
        Their true classes, (n,).
    draws, seed : int
        Number of posterior draws, and the seed of ``numpy.random.default_rng``.
    score : str
        The uncertainty score to threshold. The default is ``"entropy"``.
    target_accuracy : float
        See :func:`choose_threshold`. The default is 0.995.
    chunk_images : int or None
        Images per forward pass, bounding memory. The default, ``None``, sizes
        them to the caches (:func:`bnn.predictive.forward.images_per_chunk`).
    """
    if score not in SCORES:
        raise ConfigError(f"unknown flag score {score!r}; choose one of {', '.join(SCORES)}")
    summary = summarise_predictive(
        posterior, images, draws, np.random.default_rng(seed), chunk_images=chunk_images
    )
    correct = summary.mean_probabilities.argmax(axis=1) == np.asarray(labels)
    return choose_threshold(scores_of(summary), correct, score, target_accuracy)


def save(rule: FlagRule, folder: str | os.PathLike) -> None:
    """Write ``folder/flag.json`` atomically."""
    text = json.dumps(rule.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    write_text(Path(folder) / FLAG_FILE, text + "\n")


def load(folder: str | os.PathLike) -> FlagRule:
    """Read the rule :func:`save` wrote into ``folder``.

    Raises
    ------
    DataError
        If ``flag.json`` is missing or malformed.
    """
    path = Path(folder) / FLAG_FILE
    if not path.is_file():
        raise DataError(f"{path} not found; {_REFIT_HINT}")
    try:
        rule = FlagRule.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path} is not a valid flag rule ({reason}); {_REFIT_HINT}") from None
    problem = _rule_problem(rule)
    if problem:
        raise DataError(f"{path} is not a valid flag rule ({problem}); {_REFIT_HINT}")
    return rule


def _rule_problem(rule: FlagRule) -> str | None:
    """What makes a parsed rule unusable, or None: a rule that flags by NaN flags nothing."""
    if rule.score not in SCORES:
        return f"score {rule.score!r} is not one of {', '.join(SCORES)}"
    if math.isnan(rule.threshold) or rule.threshold == math.inf:
        return f"threshold {rule.threshold} is not a number or null"
    if not 0 < rule.target_accuracy <= 1:
        return f"target_accuracy {rule.target_accuracy} is outside (0, 1]"
    if not 0 <= rule.valid_flagged_fraction <= 1:
        return f"valid_flagged_fraction {rule.valid_flagged_fraction} is outside [0, 1]"
    return None
