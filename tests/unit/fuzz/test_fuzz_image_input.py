"""``predict --images`` from any file: a valid batch, or one DataError; huge inputs refused early.

A valid batch is float32 (N, 784) in [0, 1] with one source per image, and for
a folder every PNG is either an image or a reported problem. Arrays come in
every dtype and shape, PNGs in every mode and size, and folders mix good
PNGs, damaged ones and other files.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from bnn.core.errors import DataError
from bnn.serving import image_input
from bnn.serving.image_input import ImageBatch, read_images
from helpers_fuzz import FUZZ, count

DTYPES = st.sampled_from(
    ["uint8", "uint16", "int8", "int32", "int64", "float16", "float32", "float64", "bool"]
)
SHAPES = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    st.sampled_from([(28, 28), (784,), (1, 28, 28), (2, 784), (0, 784), (3, 28, 28)]),
)
ARRAYS = st.builds(lambda dtype, shape: (dtype, shape), DTYPES, SHAPES).flatmap(
    lambda spec: hnp.arrays(spec[0], spec[1], elements=_elements(spec[0]))
)
# "P+t": a palette image with a transparent entry (PIL cannot write mode PA as PNG).
PNG_MODES = ["1", "L", "LA", "P", "P+t", "RGB", "RGBA", "I;16"]


def _elements(dtype: str):
    if dtype.startswith("float"):
        width = int(dtype.removeprefix("float"))
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    return None


def check_batch(batch: ImageBatch) -> None:
    assert batch.images.dtype == np.float32 and batch.images.ndim == 2
    assert batch.images.shape[1] == 784 and len(batch.images) >= 1
    assert len(batch.sources) == len(batch.images)
    assert np.isfinite(batch.images).all()
    assert batch.images.min() >= 0 and batch.images.max() <= 1


def read_or_data_error(path: Path) -> ImageBatch | None:
    try:
        batch = read_images(path)
    except DataError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(str(path)), message
        return None
    check_batch(batch)
    return batch


@FUZZ
@given(ARRAYS)
def test_any_npy_array(array):
    count("npy")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digits.npy"
        np.save(path, array)
        read_or_data_error(path)


@FUZZ
@given(st.dictionaries(st.sampled_from(["images", "x", "labels"]), ARRAYS, max_size=3))
def test_any_npz_archive(arrays):
    count("npz")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digits.npz"
        np.savez(path, **arrays)
        read_or_data_error(path)


def png_bytes(mode: str, width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":  # 16-bit gray
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    else:
        base = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
        image = base.convert(mode.removesuffix("+t"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **({"transparency": 0} if mode == "P+t" else {}))
    return buffer.getvalue()


PNGS = st.builds(
    png_bytes,
    st.sampled_from(PNG_MODES),
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(0, 2**16),
)


@st.composite
def damaged(draw, payload: bytes) -> bytes:
    data = bytearray(payload)
    kind = draw(st.sampled_from(["none", "cut", "flip", "garbage"]))
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "garbage":
        data = bytearray(draw(st.binary(max_size=64)))
    return bytes(data)


@FUZZ
@given(st.data(), PNGS)
def test_any_png_of_any_mode_and_size_damaged_or_not(data, png):
    count("png")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "digit.png"
        path.write_bytes(data.draw(damaged(png)))
        batch = read_or_data_error(path)
        assert batch is None or len(batch) == 1


ENTRY = st.one_of(
    st.tuples(st.just("good.png"), PNGS),
    st.tuples(st.just("bad.png"), st.binary(max_size=40)),
    st.tuples(st.just("note.txt"), st.binary(max_size=10)),
    st.tuples(st.just("sub.png/"), st.just(b"")),  # a folder named like a PNG
)


@FUZZ
@given(st.lists(ENTRY, max_size=6))
def test_a_folder_mixing_good_and_bad_files(entries):
    count("png folder")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pngs = []
        for index, (kind, content) in enumerate(entries):
            name = f"{index:02d}-{kind.rstrip('/')}"
            if kind.endswith("/"):
                (root / name).mkdir()
                continue
            (root / name).write_bytes(content)
            if name.endswith(".png"):
                pngs.append(name)
        batch = read_or_data_error(root)
        if batch is None:
            return
        # Every PNG file is an image or a reported problem, in name order; nothing else is read.
        reported = [problem.split(":", 1)[0] for problem in batch.problems]
        assert sorted(batch.sources + reported) == pngs
        assert batch.sources == sorted(batch.sources)
        good = [name for name in pngs if "good" in name]
        assert set(good) <= set(batch.sources)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([".npy", ".npz", ".png", ".gz", "-ubyte", ""]))
def test_any_bytes_under_any_name(payload, suffix):
    count("raw bytes")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(payload)
        read_or_data_error(path)


# --- bounded work ----------------------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header says ``width`` x ``height``: a decompression bomb's header."""
    data = bytearray(png_bytes("L", 1, 1, 0))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


@FUZZ
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_a_png_claiming_any_size_is_refused_before_decoding(width, height):
    count("png header")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bomb.png"
        path.write_bytes(png_claiming(width, height))
        read_or_data_error(path)  # within the deadline, whatever the claim


def test_a_huge_png_names_its_size(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_claiming(6_000, 6_000))
    with pytest.raises(DataError, match=r"6000 x 6000 pixels, more than the 25,000,000"):
        read_images(path)
    # Beyond PIL's own limit it refuses at open; the line still says what to do.
    path.write_bytes(png_claiming(30_000, 30_000))
    with pytest.raises(DataError, match=r"more than the 25,000,000 pixels.*scale it down"):
        read_images(path)


def test_a_huge_npy_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**9, 784)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(bytes(64))
    with pytest.raises(DataError, match=r"more than the 1,073,741,824 predict reads"):
        read_images(path)
    header["shape"] = (1000, 784)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(bytes(64))
    with pytest.raises(DataError, match=r"truncated .npy file"):
        read_images(path)


def test_an_npz_member_larger_than_the_bound_is_refused(tmp_path, monkeypatch):
    # The bound is the zip directory's uncompressed size; lowered here to test it on a small file.
    monkeypatch.setattr(image_input, "MAX_ARRAY_BYTES", 1000)
    np.savez_compressed(tmp_path / "zeros.npz", images=np.zeros((10, 784), np.uint8))
    with pytest.raises(DataError, match="more than the 1,000 predict reads"):
        read_images(tmp_path / "zeros.npz")
