"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the array in C order. MNIST uses only the
unsigned-byte type (``0x08``).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path
from bnn.core.errors import DataError

UBYTE_TYPE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


REFETCH = "delete it and run the fetch stage again"
# MNIST's largest file is 47 MB; a header claiming more than this is refused before
# anything is read, so a gzip bomb or a corrupt header cannot exhaust memory.
MAX_PAYLOAD_BYTES = 1 << 30
_READ_BLOCK = 1 << 24


def _header(start: bytes, source: str) -> tuple[tuple[int, ...], int]:
    """Shape and header size from the first bytes (at least the whole header if there is one)."""
    if len(start) < 4:
        raise DataError(
            f"{source}: only {len(start)} bytes, too short for an IDX header; {REFETCH}"
        )
    zero, type_code, ndim = struct.unpack(">HBB", start[:4])
    if zero != 0 or type_code != UBYTE_TYPE:
        raise DataError(
            f"{source}: bad IDX magic number 0x{start[:4].hex()} "
            f"(expected 0x0000{UBYTE_TYPE:02x}0N, unsigned bytes); {REFETCH}"
        )
    if not 1 <= ndim <= 3:
        raise DataError(
            f"{source}: IDX header claims {ndim} dimensions, MNIST has 1 or 3; {REFETCH}"
        )
    header_size = 4 + 4 * ndim
    if len(start) < header_size:
        raise DataError(f"{source}: truncated IDX header; {REFETCH}")
    return struct.unpack(f">{ndim}I", start[4:header_size]), header_size


def _size_error(source: str, shape, expected: int, found: int) -> DataError:
    kind = "truncated" if found < expected else "has trailing bytes"
    return DataError(
        f"{source}: IDX file {kind}: header shape {shape} needs {expected} bytes, "
        f"found {found}; {REFETCH}"
    )


def parse_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, validating the header against the payload.

    Raises
    ------
    DataError
        If the magic number, the dimensions or the payload length are wrong.
    """
    shape, header_size = _header(payload[:16], source)
    expected = header_size + math.prod(shape)
    if len(payload) != expected:
        raise _size_error(source, shape, expected, len(payload))
    return np.frombuffer(payload, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a uint8 array.

    The header is read first; the payload is read only up to the size it
    claims, which must be at most :data:`MAX_PAYLOAD_BYTES`, so memory is
    bounded by what the file really holds.

    Raises
    ------
    DataError
        If the file is missing, not IDX, truncated, longer than its header
        says, too large, or corrupt gzip.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; run the fetch stage (`dvc repro fetch`)")
    with open(path, "rb") as raw:
        if raw.read(2) != GZIP_MAGIC:
            raw.seek(0)
            return _read_stream(raw, str(path), os.fstat(raw.fileno()).st_size)
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw) as stream:
                try:
                    return _read_stream(stream, str(path), None)
                except DataError:
                    # A bad header or length may be damaged compression: decode a bounded
                    # stretch more, so that such a file reads as corrupt gzip.
                    stream.read(_READ_BLOCK)
                    raise
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: corrupt gzip data ({error}); {REFETCH}") from None


def _read_stream(stream, source: str, file_size: int | None) -> np.ndarray:
    """Header, then exactly the payload it claims; ``file_size`` (raw files) is checked first."""
    start = stream.read(4)
    if len(start) == 4:
        start += stream.read(4 * start[3])
    shape, header_size = _header(start, source)
    expected = header_size + math.prod(shape)
    if expected - header_size > MAX_PAYLOAD_BYTES:
        raise DataError(
            f"{source}: IDX header shape {shape} claims {expected - header_size:,} bytes, more "
            f"than the {MAX_PAYLOAD_BYTES:,} read here; split the file, or {REFETCH}"
        )
    if file_size is not None and file_size != expected:
        raise _size_error(source, shape, expected, file_size)
    blocks, remaining = [], expected - header_size
    while remaining:
        block = stream.read(min(remaining, _READ_BLOCK))
        if not block:
            break
        blocks.append(block)
        remaining -= len(block)
    if remaining:
        raise _size_error(source, shape, expected, expected - remaining)
    if file_size is None and stream.read(1):
        raise _size_error(source, shape, expected, expected + 1)
    return np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(shape)


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
