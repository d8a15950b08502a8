"""Tests of bnn.reporting.uncertainty_plots: each figure is a readable PNG, written atomically."""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pytest
from PIL import Image

from bnn.evaluation import uncertainty
from bnn.reporting import uncertainty_plots

N_CLASSES = 10


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20190606)


def predictive(rng: np.random.Generator, n_images: int, sharpness: float):
    """Mean probabilities and labels of a classifier that is right about 90% of the time."""
    mean = rng.dirichlet(np.full(N_CLASSES, 1.0 / sharpness), size=n_images)
    predicted = mean.argmax(axis=1)
    wrong = rng.random(n_images) < 0.1
    labels = np.where(wrong, (predicted + 1) % N_CLASSES, predicted)
    return mean, labels


def assert_png(path) -> None:
    """``path`` is a PNG that PIL opens, of a non-zero size and not blank."""
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 300 and height > 300
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 1.0, "the image is blank"


def assert_no_part_files(folder) -> None:
    assert list(folder.rglob("*.part")) == []


def test_plot_reliability_compares_runs(tmp_path, rng):
    bins_by_label = {
        label: uncertainty.reliability_bins(*predictive(rng, 2_000, sharpness))
        for label, sharpness in [("BNN", 5.0), ("MAP", 50.0)]
    }
    path = tmp_path / "plots" / "reliability.png"  # the folder does not exist yet

    uncertainty_plots.plot_reliability(bins_by_label, path)

    assert_png(path)
    assert_no_part_files(tmp_path)


def test_plot_reliability_of_one_filled_bin(tmp_path):
    # Every confidence 1.0: the rest of the bins are empty (NaN), which must not break the axes.
    mean = np.zeros((4, N_CLASSES))
    mean[:, 0] = 1.0
    bins = uncertainty.reliability_bins(mean, np.array([0, 0, 1, 0]))

    uncertainty_plots.plot_reliability({"MAP": bins}, tmp_path / "reliability.png")

    assert_png(tmp_path / "reliability.png")


def test_plot_selective_compares_runs(tmp_path, rng):
    correct = rng.random(1_000) < 0.9
    curves = {
        "BNN entropy": uncertainty.selective_prediction(
            np.where(correct, 0.0, 1.0) + rng.random(1_000), correct
        ),
        "MAP entropy": uncertainty.selective_prediction(rng.random(1_000), correct),
    }

    uncertainty_plots.plot_selective(curves, tmp_path / "selective.png")

    assert_png(tmp_path / "selective.png")
    assert_no_part_files(tmp_path)


def test_plot_shift_draws_four_panels(tmp_path, rng):
    angle = np.arange(0.0, 181.0, 15.0)
    rows_by_label = {
        label: {
            "angle": angle,
            "accuracy": 0.99 - 0.8 * np.sin(np.radians(angle / 2)) ** 2,
            "ece": 0.01 + scale * np.sin(np.radians(angle / 2)) ** 2,
            "nll": 0.03 + 3 * scale * angle / 180,
            "mean_entropy": 0.05 + (1 - scale) * angle / 90 + rng.normal(0, 0.01, angle.size),
        }
        for label, scale in [("BNN", 0.2), ("MAP", 0.5)]
    }

    uncertainty_plots.plot_shift(rows_by_label, tmp_path / "shift.png")

    assert_png(tmp_path / "shift.png")
    assert_no_part_files(tmp_path)


def test_plot_ood_with_an_empty_set(tmp_path, rng):
    scores_by_set = {
        "MNIST test": rng.exponential(0.05, size=5_000),
        "uniform noise": rng.uniform(0.5, 2.3, size=500),
        "fashion": np.array([]),
    }

    uncertainty_plots.plot_ood(scores_by_set, tmp_path / "ood.png", score_name="mutual_info")

    assert_png(tmp_path / "ood.png")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda path: uncertainty_plots.plot_reliability({}, path), "bins_by_label is empty"),
        (
            lambda path: uncertainty_plots.plot_selective({"BNN": (np.ones(3), np.ones(2))}, path),
            "same non-zero length",
        ),
        (
            lambda path: uncertainty_plots.plot_shift({"BNN": {"angle": np.zeros(2)}}, path),
            "lacks",
        ),
        (
            lambda path: uncertainty_plots.plot_ood({"test": np.array([0.1, np.nan])}, path),
            "NaN",
        ),
        (lambda path: uncertainty_plots.plot_ood({"test": np.array([])}, path), "every set"),
    ],
)
def test_invalid_inputs_raise_and_write_nothing(tmp_path, call, message):
    path = tmp_path / "figure.png"
    with pytest.raises(ValueError, match=message):
        call(path)
    assert not path.exists()
    assert_no_part_files(tmp_path)


def test_failed_save_leaves_no_file(tmp_path, rng, monkeypatch):
    def savefig_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_then_fail)
    path = tmp_path / "ood.png"

    with pytest.raises(OSError, match="disk full"):
        uncertainty_plots.plot_ood({"test": rng.random(50)}, path)

    assert not path.exists()
    assert_no_part_files(tmp_path)
