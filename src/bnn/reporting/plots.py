"""Figures of a fit and its posterior predictive, written as PNG files.

Every function takes plain NumPy arrays and an output path, draws on a
:class:`matplotlib.figure.Figure` with the Agg renderer and writes the PNG
atomically (see :func:`bnn.core.atomic.atomic_path`), so a reader such as DVC or
MLflow never sees half an image. Figures are built without ``pyplot``: nothing
is registered in its global figure list, no window opens, and each figure is
freed when the function returns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from bnn.core.atomic import atomic_path

DPI = 120

# A linear axis flattens the converged part of the curve into a line once the
# early ELBO is this many times larger in magnitude than the converged level.
_SYMLOG_RATIO = 30.0


def plot_elbo(
    steps: np.ndarray,
    elbo: np.ndarray,
    path: str | os.PathLike,
    zoom_fraction: float = 0.5,
) -> None:
    """Plot the ELBO history: the whole run, and a zoom on its later iterations.

    The left panel shows every iteration; when the first estimates dwarf the
    converged level (a fresh net starts near -1e6 and settles near -1e4) its
    y axis is symmetric-log, so both ends stay readable. The right panel shows
    the last ``zoom_fraction`` of the points with its own y limits, set from
    the 1st-99th percentiles so that a few noisy minibatch estimates do not
    hide the trend. Both panels overlay a running mean on the raw estimates.

    Parameters
    ----------
    steps : np.ndarray
        Iteration numbers, shape (n_points,), increasing.
    elbo : np.ndarray
        ELBO estimate at each of ``steps``, shape (n_points,). NaN and inf
        points are left out of the axis limits (and show as gaps).
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.
    zoom_fraction : float
        Fraction of the points, counted from the end, shown in the zoom panel;
        must be in (0, 1]. The default is 0.5.

    Raises
    ------
    ValueError
        If ``steps`` and ``elbo`` are not 1-D arrays of the same length with
        at least two points, or ``zoom_fraction`` is outside (0, 1].
    """
    steps = np.asarray(steps, dtype=float)
    elbo = np.asarray(elbo, dtype=float)
    if steps.ndim != 1 or steps.shape != elbo.shape:
        raise ValueError(
            f"steps and elbo must be 1-D arrays of the same length, got shapes "
            f"{steps.shape} and {elbo.shape}; pass one ELBO value per logged step"
        )
    if steps.size < 2:
        raise ValueError(f"plot_elbo needs at least 2 points, got {steps.size}")
    if not 0.0 < zoom_fraction <= 1.0:
        raise ValueError(f"zoom_fraction must be in (0, 1], got {zoom_fraction}")

    n_zoom = min(steps.size, max(2, int(np.ceil(zoom_fraction * steps.size))))
    zoom_steps, zoom_elbo = steps[-n_zoom:], elbo[-n_zoom:]

    fig = Figure(figsize=(11, 4.2), dpi=DPI, layout="constrained")
    ax_full, ax_zoom = fig.subplots(1, 2)

    smoothed = _draw_elbo(ax_full, steps, elbo)
    # Shade the zoomed range so the two panels are visibly the same run.
    ax_full.axvspan(zoom_steps[0], zoom_steps[-1], color="tab:orange", alpha=0.08, lw=0)
    late_level = _finite_abs_median(zoom_elbo)
    early_peak = np.max(np.abs(elbo[np.isfinite(elbo)]), initial=0.0)
    if late_level > 0 and early_peak > _SYMLOG_RATIO * late_level:
        # The linear band sits one decade below the converged level, so the
        # whole curve normally lies in the logarithmic part.
        ax_full.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(late_level)))
        ax_full.set_title("ELBO, all iterations (symlog y axis)")
    else:
        ax_full.set_title("ELBO, all iterations")
    if smoothed:
        ax_full.legend(loc="best", fontsize="small")

    _draw_elbo(ax_zoom, zoom_steps, zoom_elbo)
    ax_zoom.set_ylim(*_robust_limits(zoom_elbo))
    ax_zoom.set_xlim(zoom_steps[0], zoom_steps[-1])
    # Offsets like "1e4 + ..." are easy to misread as the ELBO itself.
    ax_zoom.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax_zoom.set_title(f"ELBO, last {zoom_fraction:.0%} of the points (zoom)")
    save_figure(fig, path)


def plot_confusion(
    confusion: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
) -> None:
    """Plot a confusion matrix of counts as an annotated heatmap.

    Rows are the actual classes and columns the predicted ones. Colour is on
    a log scale, so off-diagonal cells with a handful of images stand out next
    to a diagonal of about a thousand; empty cells are left white.

    Parameters
    ----------
    confusion : np.ndarray
        Counts of shape (n_classes, n_classes); ``confusion[i, j]`` is the
        number of images of class ``i`` predicted as ``j``.
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.
    class_names : sequence of str, optional
        Tick labels, one per class. The default is the class indices.

    Raises
    ------
    ValueError
        If ``confusion`` is not a square 2-D array of finite, non-negative
        counts, or ``class_names`` has the wrong length.
    """
    confusion = np.asarray(confusion, dtype=float)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.size == 0:
        raise ValueError(
            f"confusion must be a square (n_classes, n_classes) array, got shape {confusion.shape}"
        )
    if not np.all(np.isfinite(confusion)) or np.any(confusion < 0):
        raise ValueError("confusion must hold finite, non-negative counts")
    n_classes = confusion.shape[0]
    if class_names is None:
        class_names = [str(index) for index in range(n_classes)]
    elif len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} entries but confusion has {n_classes} classes; "
            f"pass one name per row"
        )

    total = confusion.sum()
    accuracy = np.trace(confusion) / total if total > 0 else float("nan")
    vmax = max(confusion.max(), 10.0)  # keeps the norm valid for an all-zero matrix
    norm = LogNorm(vmin=1.0, vmax=vmax)

    fig = Figure(figsize=(7.2, 6.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_less(confusion, 1.0), cmap="viridis", norm=norm, interpolation="nearest"
    )
    fig.colorbar(image, ax=ax, label="images (log scale)", shrink=0.85)

    is_integer = np.all(confusion == np.round(confusion))
    fontsize = 8 if n_classes <= 12 else 6
    for row in range(n_classes):
        for col in range(n_classes):
            count = confusion[row, col]
            label = f"{count:.0f}" if is_integer else f"{count:.3g}"
            # Dark text on the bright end of viridis, light text elsewhere, and
            # grey zeros on the white empty cells so the mistakes stand out.
            if count < 1:
                color = "0.6"
            else:
                color = "black" if norm(count) > 0.6 else "white"
            ax.text(col, row, label, ha="center", va="center", fontsize=fontsize, color=color)

    ticks = np.arange(n_classes)
    ax.set_xticks(ticks, labels=class_names)
    ax.set_yticks(ticks, labels=class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title(f"Confusion matrix (n = {total:,.0f}, accuracy = {accuracy:.2%})")
    save_figure(fig, path)


def plot_chisquare(
    chi2_correct: np.ndarray,
    chi2_errors: np.ndarray,
    path: str | os.PathLike,
) -> None:
    """Compare the certainty of correctly and wrongly classified images.

    For each test image the posterior predictive samples give counts of each
    label; their chi-square statistic against a uniform distribution
    (:func:`scipy.stats.chisquare`) is large when the samples agree and small
    when the network is unsure. The two distributions are drawn as overlaid
    density histograms on shared bins, with their medians marked: the errors
    should sit to the left, i.e. the network knows when it is unsure.

    Parameters
    ----------
    chi2_correct : np.ndarray
        Statistics of the correctly classified images, shape (n_correct,).
    chi2_errors : np.ndarray
        Statistics of the misclassified images, shape (n_errors,). Either
        array may be empty: only the other is drawn, and the legend says
        "no errors" (or "no correct").
    path : str or os.PathLike
        Output PNG file; its folder is created if missing.

    Raises
    ------
    ValueError
        If either input is not 1-D, holds NaN or inf, or both are empty.
    """
    groups = {
        "correct": np.asarray(chi2_correct, dtype=float),
        "errors": np.asarray(chi2_errors, dtype=float),
    }
    for name, values in groups.items():
        if values.ndim != 1:
            raise ValueError(f"chi2_{name} must be a 1-D array, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"chi2_{name} holds NaN or inf; pass finite statistics")
    if all(values.size == 0 for values in groups.values()):
        raise ValueError("chi2_correct and chi2_errors are both empty; there is nothing to plot")

    # Shared bins, so the two densities are comparable bar by bar.
    bins = np.histogram_bin_edges(np.concatenate(list(groups.values())), bins=40)
    colors = {"correct": "tab:blue", "errors": "tab:red"}

    fig = Figure(figsize=(8, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    peak_density = 0.0
    for name, values in groups.items():
        if values.size == 0:
            # An entry without a marker, so the legend says why a colour is missing.
            ax.plot([], [], linestyle="none", label=f"no {name}")
            continue
        median = np.median(values)
        densities, _, _ = ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.45,
            color=colors[name],
            edgecolor=colors[name],
            label=f"{name}: n = {values.size:,}, median = {median:,.1f}",
        )
        ax.axvline(median, color=colors[name], linestyle="--", linewidth=1.5)
        peak_density = max(peak_density, float(densities.max()))
    # Headroom above the tallest bar keeps the legend off the histograms.
    ax.set_ylim(0.0, 1.35 * peak_density or 1.0)
    ax.legend(loc="upper left", title="test images (dashed: median)", fontsize="small")
    ax.set_xlabel("chi-square statistic of the sampled labels (higher = more certain)")
    ax.set_ylabel("density")
    ax.set_title("Posterior predictive certainty: correct vs wrong predictions")
    save_figure(fig, path)


def _draw_elbo(ax, steps: np.ndarray, elbo: np.ndarray) -> bool:
    """Draw raw ELBO estimates and, when there are enough, their running mean.

    Returns whether the running mean was drawn.
    """
    window = steps.size // 25
    smooth = window >= 3
    # Faint raw estimates only when a running mean carries the trend.
    alpha = 0.35 if smooth else 1.0
    ax.plot(steps, elbo, color="tab:blue", alpha=alpha, linewidth=0.8, label="estimate")
    if smooth:
        # Minibatch estimates are noisy; the running mean shows the trend.
        running_mean = np.convolve(elbo, np.ones(window) / window, mode="valid")
        centre = window // 2
        ax.plot(
            steps[centre : centre + running_mean.size],
            running_mean,
            color="tab:blue",
            linewidth=1.6,
            label=f"running mean ({window} points)",
        )
    ax.set_xlabel("iteration")
    ax.set_ylabel("ELBO")
    ax.grid(True, alpha=0.3)
    return smooth


def _finite_abs_median(values: np.ndarray) -> float:
    """Median of the absolute finite values, or 0 when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(np.abs(finite))) if finite.size else 0.0


def _robust_limits(values: np.ndarray) -> tuple[float, float]:
    """Y limits from the 1st-99th percentiles of the finite values, with a margin."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    low, high = np.percentile(finite, [1.0, 99.0])
    margin = 0.1 * (high - low) or max(1e-3 * abs(low), 1e-3)
    return float(low - margin), float(high + margin)


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        # The temporary name ends in ".part", so the format cannot be inferred.
        fig.savefig(tmp, format="png", dpi=DPI)
