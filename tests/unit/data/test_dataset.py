"""Preprocessing: cross-checks between files, scaling and the validation split."""

import numpy as np
import pytest

from bnn.core.errors import ConfigError, DataError
from bnn.data.dataset import (
    LabelledImages,
    load_split,
    read_pair,
    save_split,
    scale_pixels,
    split_validation,
)
from bnn.data.idx import write_idx
from helpers_mnist import synthetic_mnist, write_synthetic_idx


@pytest.fixture
def raw(tmp_path):
    return write_synthetic_idx(tmp_path, synthetic_mnist(30, 10, seed=1))


def test_read_pair_checks_counts(raw, tmp_path):
    pair = read_pair(raw["train_images"], raw["train_labels"])
    assert pair.images.shape == (30, 28, 28) and len(pair) == 30
    write_idx(tmp_path / "short-labels", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match=r"has 30 images but .* has 29 labels"):
        read_pair(raw["train_images"], tmp_path / "short-labels")


def test_read_pair_checks_image_shape_and_label_range(raw, tmp_path):
    write_idx(tmp_path / "wide", np.zeros((30, 28, 29), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \(n, 28, 28\)"):
        read_pair(tmp_path / "wide", raw["train_labels"])
    write_idx(tmp_path / "bad-labels", np.full(30, 11, dtype=np.uint8))
    with pytest.raises(DataError, match="label 11 outside 0-9"):
        read_pair(raw["train_images"], tmp_path / "bad-labels")


def test_scaling_is_x_over_256():
    scaled = scale_pixels(np.array([0, 128, 255], dtype=np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, [0.0, 0.5, 255 / 256])
    assert scaled.max() < 1.0


def test_last_split_holds_out_the_last_images():
    data = LabelledImages(np.arange(10)[:, None], np.arange(10))
    train, valid = split_validation(data, 3, "last", seed=0)
    assert train.labels.tolist() == list(range(7)) and valid.labels.tolist() == [7, 8, 9]


def test_random_split_is_seeded_and_disjoint():
    data = LabelledImages(np.arange(20)[:, None], np.arange(20))
    first = split_validation(data, 5, "random", seed=3)
    again = split_validation(data, 5, "random", seed=3)
    assert first[1].labels.tolist() == again[1].labels.tolist()
    assert set(first[0].labels) | set(first[1].labels) == set(range(20))
    assert not set(first[0].labels) & set(first[1].labels)


@pytest.mark.parametrize(("size", "strategy"), [(0, "last"), (10, "last"), (3, "stratified")])
def test_impossible_split_settings(size, strategy):
    data = LabelledImages(np.zeros((10, 1)), np.zeros(10))
    with pytest.raises(ConfigError, match=r"data\."):
        split_validation(data, size, strategy, seed=0)


def test_split_round_trip(tmp_path):
    split = LabelledImages(np.ones((2, 28, 28), np.float32), np.array([3, 4], np.uint8))
    save_split(split, tmp_path / "valid.npz")
    loaded = load_split(tmp_path, "valid")
    np.testing.assert_array_equal(loaded.images, split.images)
    with pytest.raises(DataError, match="run the preprocess stage"):
        load_split(tmp_path, "test")
