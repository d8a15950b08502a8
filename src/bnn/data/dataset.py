"""From raw IDX files to scaled, split arrays on disk."""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path
from bnn.core.errors import ConfigError, DataError
from bnn.core.mnist import IMAGE_SHAPE, N_CLASSES
from bnn.data.idx import read_idx

SPLITS = ("train", "valid", "test")


@dataclass
class LabelledImages:
    """Images (n, 28, 28) and their integer labels (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows) -> LabelledImages:
        return LabelledImages(self.images[rows], self.labels[rows])


def npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype an ``.npy`` stream's header claims, without reading its data."""
    version = np.lib.format.read_magic(handle)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, dtype = read_header(handle)
    return shape, dtype


def read_pair(images_path: Path, labels_path: Path) -> LabelledImages:
    """Read and cross-check an IDX image file and its label file."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: images must have shape (n, 28, 28), got {images.shape}; "
            "delete it and run the fetch stage again"
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must be 1-D, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the two files come from different downloads, fetch both again"
        )
    if len(labels) and labels.max() >= N_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0-9; fetch it again")
    return LabelledImages(images, labels)


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """Bytes 0-255 to floats in [0, 1), as ``x / 256`` (the 2016 experiment's scaling)."""
    return images.astype(np.float32) / np.float32(256)


def split_validation(
    train: LabelledImages, size: int, strategy: str, seed: int
) -> tuple[LabelledImages, LabelledImages]:
    """Hold out ``size`` training images: the last ones, or a seeded random choice."""
    if not 0 < size < len(train):
        raise ConfigError(
            f"data.validation_size must be between 1 and {len(train) - 1} "
            f"(the training set has {len(train)} images), got {size} (conf/data/)"
        )
    order = np.arange(len(train))
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(train))
    elif strategy != "last":
        raise ConfigError(f"data.split must be 'last' or 'random', got {strategy!r} (conf/data/)")
    return train.subset(np.sort(order[:-size])), train.subset(np.sort(order[-size:]))


def save_split(split: LabelledImages, path: str | os.PathLike) -> None:
    """Write one split as ``.npz`` (``images`` float32 in [0, 1), ``labels`` uint8), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, images=split.images, labels=split.labels)


PREPROCESS = "dvc repro -f preprocess"
_NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _split_path(folder: str | os.PathLike, name: str) -> Path:
    path = Path(folder) / f"{name}.npz"
    if not path.is_file():
        raise DataError(f"{path} not found; run the preprocess stage (`dvc repro preprocess`)")
    return path


def _corrupt(path: Path, error: BaseException) -> DataError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return DataError(f"{path} is truncated or corrupt ({reason}); rebuild it with `{PREPROCESS}`")


def load_split(folder: str | os.PathLike, name: str) -> LabelledImages:
    """Load ``{folder}/{name}.npz`` written by :func:`save_split`.

    Raises
    ------
    DataError
        If the file is missing, corrupt, or its images and labels disagree.
    """
    path = _split_path(folder, name)
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            split = LabelledImages(data["images"], data["labels"])
    except _NPZ_ERRORS as error:
        raise _corrupt(path, error) from None
    if split.labels.ndim != 1 or len(split.images) != len(split.labels):
        raise _corrupt(
            path, ValueError(f"images {split.images.shape} and labels {split.labels.shape}")
        )
    return split


def split_size(folder: str | os.PathLike, name: str) -> int:
    """The number of images in ``{folder}/{name}.npz``, read from a header, not the arrays.

    Raises
    ------
    DataError
        If the file is missing or its ``labels`` array is unreadable.
    """
    path = _split_path(folder, name)
    try:
        with zipfile.ZipFile(path) as archive, archive.open("labels.npy") as member:
            shape, _ = npy_header(member)
    except _NPZ_ERRORS as error:
        raise _corrupt(path, error) from None
    if len(shape) != 1:
        raise _corrupt(path, ValueError(f"labels of shape {shape}"))
    return int(shape[0])
