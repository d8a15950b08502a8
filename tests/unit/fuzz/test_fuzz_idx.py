"""IDX files, raw and gzipped, from any bytes: an array matching its header, or one DataError."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from bnn.core.errors import DataError
from bnn.data.idx import idx_bytes, parse_idx, read_idx
from helpers_fuzz import FUZZ, count

SMALL_ARRAYS = (
    st.integers(1, 3)
    .flatmap(lambda ndim: st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    .map(lambda shape: np.arange(int(np.prod(shape)), dtype=np.uint8).reshape(shape))
)


@st.composite
def mutated(draw, payload: bytes) -> bytes:
    """``payload`` cut, extended, or with bytes overwritten: what a damaged download looks like."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "none"]))
        if kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "flip" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=8))
    return bytes(data)


def check_result(array: np.ndarray, header: bytes) -> None:
    """A returned array is uint8 with exactly the shape its header gives."""
    assert array.dtype == np.uint8
    ndim = header[3]
    assert array.shape == struct.unpack(f">{ndim}I", header[4 : 4 + 4 * ndim])


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_data_error(payload):
    count("idx bytes")
    try:
        array = parse_idx(payload, "fuzz")
    except DataError as error:
        assert str(error).startswith("fuzz: ") and "\n" not in str(error)
    else:
        check_result(array, payload)


@FUZZ
@given(st.data(), SMALL_ARRAYS, st.booleans(), st.booleans())
def test_damaged_files_raw_or_gzip_read_or_raise_data_error(data, array, compress, damage_gzip):
    count("idx file")
    payload = idx_bytes(array)
    if compress and damage_gzip:
        content = data.draw(mutated(gzip.compress(payload)))
    else:
        content = data.draw(mutated(payload))
        content = gzip.compress(content) if compress else content
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images-idx3-ubyte.gz"
        path.write_bytes(content)
        try:
            found = read_idx(path)
        except DataError as error:
            assert str(error).startswith(str(path)) and "\n" not in str(error)
        else:
            raw = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
            check_result(found, raw)
            np.testing.assert_array_equal(found, parse_idx(raw))


@FUZZ
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3), st.booleans())
def test_a_header_claiming_any_size_is_refused_without_reading_it(shape, compress):
    # Claims up to 2**96 bytes with a payload of 16: bounded work, one DataError.
    count("idx header")
    header = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    content = header + bytes(16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big-idx3-ubyte"
        path.write_bytes(gzip.compress(content) if compress else content)
        try:
            found = read_idx(path)
        except DataError:
            pass
        else:
            assert found.size == 16
