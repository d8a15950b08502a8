"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the array in C order. MNIST uses only the
unsigned-byte type (``0x08``).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path
from bnn.core.errors import DataError

UBYTE_TYPE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: corrupt gzip data ({error}); delete it and run the fetch stage again"
        ) from None


def parse_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, validating the header against the payload.

    Raises
    ------
    DataError
        If the magic number, the dimensions or the payload length are wrong.
    """
    refetch = "delete it and run the fetch stage again"
    if len(payload) < 4:
        raise DataError(
            f"{source}: only {len(payload)} bytes, too short for an IDX header; {refetch}"
        )
    zero, type_code, ndim = struct.unpack(">HBB", payload[:4])
    if zero != 0 or type_code != UBYTE_TYPE:
        raise DataError(
            f"{source}: bad IDX magic number 0x{payload[:4].hex()} "
            f"(expected 0x0000{UBYTE_TYPE:02x}0N, unsigned bytes); {refetch}"
        )
    if not 1 <= ndim <= 3:
        raise DataError(
            f"{source}: IDX header claims {ndim} dimensions, MNIST has 1 or 3; {refetch}"
        )
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise DataError(f"{source}: truncated IDX header; {refetch}")
    shape = struct.unpack(f">{ndim}I", payload[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(payload) != expected:
        kind = "truncated" if len(payload) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {kind}: header shape {shape} needs {expected} bytes, "
            f"found {len(payload)}; {refetch}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a uint8 array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; run the fetch stage (`dvc repro fetch`)")
    return parse_idx(_read_bytes(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"IDX encoding here supports uint8 only, got {array.dtype}")
    header = struct.pack(">HBB", 0, UBYTE_TYPE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(idx_bytes(array))
