"""The files DVC reads as metrics and plots: JSON and delimited text, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

from bnn.atomic import write_text


def write_json(path: str | os.PathLike, values: Mapping) -> None:
    """Write ``values`` as pretty JSON (DVC metrics)."""
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_table(
    path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Sequence], sep: str = "\t"
) -> None:
    """Write a header and rows (DVC plots): tab-separated by default, ``sep=","`` for CSV."""
    lines = [sep.join(columns)]
    lines += [sep.join(_format(value) for value in row) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def read_table(path: str | os.PathLike, sep: str = "\t") -> dict[str, list[str]]:
    """Read a table written by :func:`write_table` into columns of strings."""
    with open(path, encoding="utf-8") as handle:
        header, *lines = handle.read().splitlines()
    columns = header.split(sep)
    values = list(zip(*(line.split(sep) for line in lines), strict=True)) or [()] * len(columns)
    return {name: list(column) for name, column in zip(columns, values, strict=True)}


def _format(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_json_list(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Write a list of objects as pretty JSON (a DVC metrics or table file)."""
    write_text(path, json.dumps(list(rows), indent=2) + "\n")
