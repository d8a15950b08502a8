"""Tests of bnn.reporting.plots: each figure is a readable PNG, written atomically."""

from __future__ import annotations

import gc
import weakref

import matplotlib.figure
import matplotlib.image
import numpy as np
import pytest

from bnn.reporting import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20160601)


def elbo_history(rng: np.random.Generator, n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """An ELBO that climbs from about -1e6 to about -1.2e4, with minibatch noise."""
    steps = np.linspace(0, 12_000, n_points)
    level = -1.2e4 - 1e6 * np.exp(-steps / 300)
    return steps, level + rng.normal(0.0, 250.0, n_points)


def confusion_counts(rng: np.random.Generator) -> np.ndarray:
    """A 10x10 confusion matrix of 10,000 images at about 97% accuracy."""
    confusion = rng.poisson(3.0, size=(10, 10))
    np.fill_diagonal(confusion, rng.integers(850, 1_150, size=10))
    return confusion


def assert_png(path, min_side: int = 300) -> None:
    """``path`` is a PNG that matplotlib reads back as a non-blank image."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 0.01, "the image is blank"


def assert_no_part_files(folder) -> None:
    assert list(folder.rglob("*.part")) == []


def test_plot_elbo_writes_png(tmp_path, rng):
    steps, elbo = elbo_history(rng)
    path = tmp_path / "plots" / "elbo.png"  # the folder does not exist yet

    plots.plot_elbo(steps, elbo, path)

    assert_png(path)
    assert_no_part_files(tmp_path)


@pytest.mark.parametrize("zoom_fraction", [0.01, 0.2, 1.0])
def test_plot_elbo_accepts_any_zoom_fraction(tmp_path, rng, zoom_fraction):
    steps, elbo = elbo_history(rng, n_points=60)

    plots.plot_elbo(steps, elbo, tmp_path / "elbo.png", zoom_fraction=zoom_fraction)

    assert_png(tmp_path / "elbo.png")


def test_plot_elbo_tolerates_non_finite_points_and_sign_changes(tmp_path, rng):
    steps = np.arange(100.0)
    elbo = np.linspace(-50.0, 5.0, 100) + rng.normal(0.0, 1.0, 100)
    elbo[[10, 60]] = np.nan, -np.inf

    plots.plot_elbo(steps, elbo, tmp_path / "elbo.png")

    assert_png(tmp_path / "elbo.png")


def test_plot_confusion_of_10_classes_writes_png(tmp_path, rng):
    path = tmp_path / "confusion.png"

    plots.plot_confusion(confusion_counts(rng), path)

    assert_png(path)
    assert_no_part_files(tmp_path)


def test_plot_confusion_with_names_and_all_zero_counts(tmp_path):
    names = [f"digit {index}" for index in range(10)]

    plots.plot_confusion(np.zeros((10, 10), dtype=int), tmp_path / "zeros.png", names)

    assert_png(tmp_path / "zeros.png")


def test_plot_chisquare_writes_png(tmp_path, rng):
    path = tmp_path / "chisquare.png"
    correct = rng.gamma(8.0, 400.0, size=970)
    errors = rng.gamma(3.0, 200.0, size=30)

    plots.plot_chisquare(correct, errors, path)

    assert_png(path)
    assert_no_part_files(tmp_path)


def test_plot_chisquare_with_no_errors(tmp_path, rng):
    path = tmp_path / "chisquare.png"

    plots.plot_chisquare(rng.gamma(8.0, 400.0, size=500), np.array([]), path)

    assert_png(path)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda path: plots.plot_elbo(np.arange(5), np.zeros(4), path), "same length"),
        (lambda path: plots.plot_elbo(np.zeros((2, 3)), np.zeros((2, 3)), path), "1-D"),
        (lambda path: plots.plot_elbo(np.arange(1), np.zeros(1), path), "at least 2"),
        (lambda path: plots.plot_elbo(np.arange(5), np.zeros(5), path, 0.0), "zoom_fraction"),
        (lambda path: plots.plot_confusion(np.ones((10, 9)), path), "square"),
        (lambda path: plots.plot_confusion(-np.ones((3, 3)), path), "non-negative"),
        (lambda path: plots.plot_confusion(np.ones((3, 3)), path, ["a", "b"]), "class_names"),
        (lambda path: plots.plot_chisquare(np.ones((2, 2)), np.ones(2), path), "1-D"),
        (lambda path: plots.plot_chisquare(np.array([1.0, np.nan]), np.ones(2), path), "NaN"),
        (lambda path: plots.plot_chisquare(np.array([]), np.array([]), path), "both empty"),
    ],
)
def test_invalid_inputs_raise_and_write_nothing(tmp_path, call, message):
    path = tmp_path / "plot.png"

    with pytest.raises(ValueError, match=message):
        call(path)

    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_png(tmp_path, rng, monkeypatch):
    path = tmp_path / "elbo.png"
    path.write_bytes(b"sentinel: the previous good plot")
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig_then_fail(self, fname, **kwargs):
        # Leave half an image behind, as a full disk would, then fail.
        real_savefig(self, fname, **kwargs)
        with open(fname, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_then_fail)

    with pytest.raises(OSError, match="No space left"):
        plots.plot_elbo(*elbo_history(rng), path)

    assert path.read_bytes() == b"sentinel: the previous good plot"
    assert_no_part_files(tmp_path)


def test_unwritable_folder_raises_and_leaves_nothing(tmp_path, rng):
    blocker = tmp_path / "plots"
    blocker.write_text("a file where the output folder should be")

    with pytest.raises(OSError):
        plots.plot_confusion(confusion_counts(rng), blocker / "confusion.png")

    assert blocker.read_text() == "a file where the output folder should be"
    assert_no_part_files(tmp_path)


def test_many_calls_leave_no_figures_behind(tmp_path, rng, monkeypatch):
    import matplotlib.pyplot as plt

    created = []

    class RecordedFigure(matplotlib.figure.Figure):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(weakref.ref(self))

    monkeypatch.setattr(plots, "Figure", RecordedFigure)
    steps, elbo = elbo_history(rng, n_points=50)
    for index in range(3):
        plots.plot_elbo(steps, elbo, tmp_path / f"elbo_{index}.png")
        plots.plot_confusion(confusion_counts(rng), tmp_path / f"confusion_{index}.png")
        plots.plot_chisquare(
            rng.gamma(8.0, 400.0, 50), rng.gamma(3.0, 200.0, 5), tmp_path / "c.png"
        )
    gc.collect()

    assert len(created) == 9
    assert [ref for ref in created if ref() is not None] == []
    assert plt.get_fignums() == []
