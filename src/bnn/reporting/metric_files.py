"""The evaluate stage's tables that figures and comparisons read back (DVC plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnn.core import tables
from bnn.evaluation import uncertainty


def write_reliability(bins: uncertainty.ReliabilityBins, path: Path) -> None:
    """The reliability diagram's filled bins as a DVC plot."""
    filled = bins.count > 0
    columns = ("lower", "upper", "count", "confidence", "accuracy")
    values = [getattr(bins, name)[filled] for name in columns]
    rows = zip(*(v.tolist() for v in values), strict=True)
    tables.write_table(path, ["bin_lower", "bin_upper", "count", "confidence", "accuracy"], rows)


def read_reliability(path: Path) -> uncertainty.ReliabilityBins:
    """What :func:`write_reliability` wrote."""
    table = tables.read_table(path)
    column = {name: np.asarray(values, float) for name, values in table.items()}
    return uncertainty.ReliabilityBins(
        lower=column["bin_lower"],
        upper=column["bin_upper"],
        count=column["count"].astype(np.int64),
        confidence=column["confidence"],
        accuracy=column["accuracy"],
    )


def write_selective(curves: dict, path: Path) -> None:
    """Accuracy vs coverage, one column per uncertainty score, as a DVC plot."""
    coverage = next(iter(curves.values()))[0]
    columns = ["coverage", *(f"accuracy_{name}" for name in curves)]
    rows = zip(coverage.tolist(), *(acc.tolist() for _, acc in curves.values()), strict=True)
    tables.write_table(path, columns, rows)
