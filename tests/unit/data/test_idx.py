"""The IDX parser: round trips, and one clear error for each kind of malformed file."""

import gzip
import struct

import numpy as np
import pytest

from bnn.core.errors import DataError
from bnn.data.idx import idx_bytes, parse_idx, read_idx, write_idx


def test_round_trip_raw_and_gzip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "images", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "images"), images)
    (tmp_path / "images.gz").write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(tmp_path / "images.gz"), images)


def test_header_layout_is_mnists():
    labels = np.array([7, 2, 1], dtype=np.uint8)
    assert idx_bytes(labels) == b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([7, 2, 1])


GOOD = idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "too short for an IDX header"),
        (b"\x00\x00\x0d\x03" + GOOD[4:], "bad IDX magic number 0x00000d03"),  # float32 type
        (b"\x12\x34" + GOOD[2:], "bad IDX magic number"),
        (b"\x00\x00\x08\x05" + GOOD[4:], "claims 5 dimensions"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:-1], "IDX file truncated: header shape (2, 3, 3) needs 34 bytes, found 33"),
        (GOOD + b"\x00", "has trailing bytes"),
    ],
)
def test_malformed_payloads_are_named(payload, problem):
    with pytest.raises(DataError, match="fetch stage again") as error:
        parse_idx(payload, "some-file")
    assert problem in str(error.value)
    assert str(error.value).startswith("some-file: ")


def test_corrupt_gzip_is_a_data_error(tmp_path):
    compressed = bytearray(gzip.compress(GOOD * 50))
    compressed[20:40] = b"\xff" * 20
    (tmp_path / "bad.gz").write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "bad.gz")


def test_truncated_gzip_is_a_data_error(tmp_path):
    (tmp_path / "cut.gz").write_bytes(gzip.compress(GOOD * 50)[:-12])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(tmp_path / "cut.gz")


def test_missing_file_names_the_stage(tmp_path):
    with pytest.raises(DataError, match="run the fetch stage"):
        read_idx(tmp_path / "nope")


def test_write_is_atomic_and_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "labels"
    write_idx(target, np.array([1, 2], dtype=np.uint8))
    with pytest.raises(TypeError):
        write_idx(target, np.array([1.5]))
    np.testing.assert_array_equal(read_idx(target), [1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["labels"]
