"""Figures of calibration and uncertainty, comparing runs, written as PNG files.

Every function takes a mapping from a run's label (``"BNN"``, ``"MAP"``) to
its data, so one figure compares runs, and an output path. Figures are drawn
and saved like those of :mod:`bnn.reporting.plots`: a :class:`matplotlib.figure.Figure`
with the Agg renderer, no ``pyplot``, and an atomic write, so a reader never
sees half an image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from bnn.evaluation.uncertainty import ReliabilityBins
from bnn.reporting.plots import DPI, save_figure

# The panels of plot_shift: key of the rows, axis label.
SHIFT_METRICS = {
    "accuracy": "accuracy",
    "ece": "expected calibration error",
    "nll": "negative log-likelihood (nats)",
    "mean_entropy": "mean predictive entropy (nats)",
}


def plot_reliability(bins_by_label: Mapping[str, ReliabilityBins], path: str | os.PathLike) -> None:
    """Plot a reliability diagram: accuracy against confidence, per bin.

    The top panel shows, for each run, the accuracy of the images in each
    confidence bin against their mean confidence; a calibrated predictive
    lies on the diagonal, an over-confident one below it. Empty bins are
    left out. The legend gives each run's expected calibration error. The
    bottom panel shows the fraction of the images in each bin on a log
    scale, because a good MNIST classifier puts nearly all of them in the
    last bin.

    Parameters
    ----------
    bins_by_label : mapping of str to ReliabilityBins
        Binned predictions of each run, from
        :func:`bnn.evaluation.uncertainty.reliability_bins`.
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.

    Raises
    ------
    ValueError
        If ``bins_by_label`` is empty or a run has no images.
    """
    _check_runs(bins_by_label, "bins_by_label")
    for label, bins in bins_by_label.items():
        if bins.count.sum() == 0:
            raise ValueError(f"run {label!r} has no images in its reliability bins")

    fig = Figure(figsize=(6.4, 7.2), dpi=DPI, layout="constrained")
    ax_diagram, ax_counts = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax_diagram.plot([0, 1], [0, 1], color="0.5", linestyle="--", label="perfect calibration")
    smallest_fraction = 1.0
    for index, (label, bins) in enumerate(bins_by_label.items()):
        color = f"C{index}"
        filled = bins.count > 0
        ece = bins.expected_calibration_error()
        ax_diagram.plot(
            bins.confidence[filled],
            bins.accuracy[filled],
            marker="o",
            color=color,
            label=f"{label} (ECE = {ece:.4f})",
        )
        fraction = bins.count / bins.count.sum()
        ax_counts.stairs(fraction, np.r_[bins.lower, bins.upper[-1]], color=color, label=label)
        smallest_fraction = min(smallest_fraction, fraction[filled].min())
    ax_diagram.set_xlim(0.0, 1.0)
    ax_diagram.set_ylim(0.0, 1.02)
    ax_diagram.set_ylabel("accuracy in the bin")
    ax_diagram.set_title("Reliability diagram (top-label confidence)")
    ax_diagram.legend(loc="upper left", fontsize="small")
    ax_diagram.grid(True, alpha=0.3)
    ax_counts.set_yscale("log")
    # Empty bins would pull a log axis down to nothing; stop just below the rarest filled bin.
    ax_counts.set_ylim(smallest_fraction / 2, 1.5)
    ax_counts.set_xlabel("confidence (largest predictive probability)")
    ax_counts.set_ylabel("fraction of images")
    ax_counts.grid(True, alpha=0.3)
    save_figure(fig, path)


def plot_selective(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike
) -> None:
    """Plot accuracy against coverage when only the most certain images are answered.

    Parameters
    ----------
    curves : mapping of str to (np.ndarray, np.ndarray)
        For each run, ``(coverage, accuracy)`` from
        :func:`bnn.evaluation.uncertainty.selective_prediction`: two 1-D arrays of the
        same, non-zero length. The legend names the score in the label, if
        the caller puts it there.
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.

    Raises
    ------
    ValueError
        If ``curves`` is empty or a curve is malformed.
    """
    _check_runs(curves, "curves")
    fig = Figure(figsize=(7, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for label, (coverage, accuracy) in curves.items():
        coverage = np.asarray(coverage, dtype=float)
        accuracy = np.asarray(accuracy, dtype=float)
        if coverage.ndim != 1 or coverage.shape != accuracy.shape or coverage.size == 0:
            raise ValueError(
                f"curve {label!r} needs 1-D coverage and accuracy of the same non-zero length, "
                f"got shapes {coverage.shape} and {accuracy.shape}"
            )
        ax.plot(coverage, accuracy, label=f"{label} (all images: {accuracy[-1]:.2%})")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("coverage (fraction of images answered, most certain first)")
    ax.set_ylabel("accuracy of the answered images")
    ax.set_title("Selective prediction")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, alpha=0.3)
    save_figure(fig, path)


def plot_shift(
    rows_by_label: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike
) -> None:
    """Plot how accuracy, calibration and uncertainty change as the digits are rotated.

    A 2x2 figure with one metric per panel against the rotation angle:
    accuracy, expected calibration error, negative log-likelihood and mean
    predictive entropy. A predictive that knows what it does not know keeps
    its ECE low and raises its entropy as the accuracy falls.

    Parameters
    ----------
    rows_by_label : mapping of str to mapping of str to np.ndarray
        For each run, 1-D arrays of the same length under the keys
        ``angle`` (degrees), ``accuracy``, ``ece``, ``nll`` and
        ``mean_entropy``; other keys are ignored.
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.

    Raises
    ------
    ValueError
        If ``rows_by_label`` is empty, or a run lacks a key or has arrays of
        different lengths.
    """
    _check_runs(rows_by_label, "rows_by_label")
    required = ["angle", *SHIFT_METRICS]
    for label, rows in rows_by_label.items():
        missing = [key for key in required if key not in rows]
        if missing:
            raise ValueError(
                f"run {label!r} lacks {missing}; pass arrays under the keys {required}"
            )
        shapes = {key: np.shape(rows[key]) for key in required}
        if len(set(shapes.values())) != 1 or np.ndim(rows["angle"]) != 1:
            raise ValueError(f"run {label!r} needs 1-D arrays of one length, got shapes {shapes}")

    fig = Figure(figsize=(10, 7.2), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    for ax, (key, axis_label) in zip(axes, SHIFT_METRICS.items(), strict=True):
        for index, (label, rows) in enumerate(rows_by_label.items()):
            ax.plot(rows["angle"], rows[key], marker="o", color=f"C{index}", label=label)
        ax.set_ylabel(axis_label)
        ax.grid(True, alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel("rotation angle (degrees)")
    axes[0].legend(loc="best", fontsize="small")
    fig.suptitle("Rotated test digits")
    save_figure(fig, path)


def plot_ood(
    scores_by_set: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    score_name: str = "entropy",
) -> None:
    """Compare one uncertainty score on test digits and on out-of-distribution inputs.

    Each set is drawn as a density histogram on bins shared by all sets,
    with its median dashed; the out-of-distribution sets should sit to the
    right (more uncertain) of the test digits.

    Parameters
    ----------
    scores_by_set : mapping of str to np.ndarray
        1-D scores of each set of images, e.g. ``{"MNIST test": ...,
        "noise": ...}``. A set may be empty: the legend says so.
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.
    score_name : str
        Name of the score, for the axis label. The default is "entropy".

    Raises
    ------
    ValueError
        If ``scores_by_set`` is empty, a set is not 1-D or holds NaN or inf,
        or every set is empty.
    """
    _check_runs(scores_by_set, "scores_by_set")
    sets = {name: np.asarray(values, dtype=float) for name, values in scores_by_set.items()}
    for name, values in sets.items():
        if values.ndim != 1:
            raise ValueError(f"scores of {name!r} must be 1-D, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"scores of {name!r} hold NaN or inf; pass finite scores")
    if all(values.size == 0 for values in sets.values()):
        raise ValueError("every set of scores is empty; there is nothing to plot")

    # Shared bins, so the densities are comparable bar by bar.
    bins = np.histogram_bin_edges(np.concatenate(list(sets.values())), bins=40)
    fig = Figure(figsize=(8, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for index, (name, values) in enumerate(sets.items()):
        color = f"C{index}"
        if values.size == 0:
            ax.plot([], [], linestyle="none", label=f"{name}: no images")
            continue
        median = np.median(values)
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.4,
            color=color,
            edgecolor=color,
            label=f"{name}: n = {values.size:,}, median = {median:.3g}",
        )
        ax.axvline(median, color=color, linestyle="--", linewidth=1.5)
    ax.set_xlabel(f"{score_name} (higher = more uncertain)")
    ax.set_ylabel("density")
    ax.set_title(f"{score_name}: test digits vs out-of-distribution inputs")
    ax.legend(loc="best", fontsize="small", title="dashed: median")
    save_figure(fig, path)


def _check_runs(by_label: Mapping, name: str) -> None:
    if not by_label:
        raise ValueError(f"{name} is empty; pass at least one run, e.g. {{'BNN': ...}}")
