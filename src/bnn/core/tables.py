"""The files DVC reads as metrics and plots: JSON and delimited text, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from bnn.core.atomic import atomic_path, write_text


def write_json(path: str | os.PathLike, values: Mapping) -> None:
    """Write ``values`` as pretty JSON (DVC metrics)."""
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_table(
    path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Sequence], sep: str = "\t"
) -> None:
    """Write a header and rows (DVC plots): tab-separated by default, ``sep=","`` for CSV.

    Floats are written to 6 significant digits, which every plot and table here needs.
    """
    frame = pd.DataFrame([list(row) for row in rows], columns=list(columns))
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=sep, index=False, float_format="%.6g", lineterminator="\n")


def read_table(path: str | os.PathLike, sep: str = "\t") -> dict[str, list[str]]:
    """Read a table written by :func:`write_table` into columns of strings."""
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    return {name: frame[name].tolist() for name in frame.columns}


def write_json_list(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Write a list of objects as pretty JSON (a DVC metrics or table file)."""
    write_text(path, json.dumps(list(rows), indent=2) + "\n")
