"""Runs side by side: the BNN against the MAP baseline, or any evaluated runs.

``python -m bnn.reporting.compare --out metrics/compare BNN=. MAP=runs/dense-map/0``
reads each run's ``metrics/metrics.json``, ``metrics/shift.tsv`` and
``metrics/reliability.tsv`` (as the evaluate stage writes them under the run's
folder) and writes ``compare.md`` (a table), ``compare.json``, and the shift
and reliability figures with one curve per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bnn.core import tables
from bnn.core.atomic import write_text
from bnn.core.cli import user_errors_exit
from bnn.core.errors import DataError
from bnn.reporting import uncertainty_plots
from bnn.reporting.metric_files import read_reliability

# (metrics.json key, row label, format); a lower-is-better score says so.
ROWS = (
    ("test_accuracy", "test accuracy (mode rule)", "{:.2%}"),
    ("test_nll", "test NLL (lower is better)", "{:.4f}"),
    ("test_ece", "test ECE, 15 bins (lower is better)", "{:.4f}"),
    ("test_brier", "test Brier (lower is better)", "{:.4f}"),
    ("error_auroc", "error AUROC (best score)", "{:.4f}"),
    ("error_auroc_score", "its score", "{}"),
    ("ood_auroc_noise", "OOD AUROC, noise (best score)", "{:.4f}"),
    ("ood_auroc_scrambled", "OOD AUROC, scrambled digits (best score)", "{:.4f}"),
)


def load_run(folder: Path) -> dict:
    """One run's metrics and shift rows, from ``folder/metrics``."""
    metrics_dir = folder / "metrics"
    path = metrics_dir / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path} not found; run the pipeline there first (`dvc repro`)")
    shift = tables.read_table(metrics_dir / "shift.tsv")
    return {
        "metrics": json.loads(path.read_text(encoding="utf-8")),
        "shift": {key: np.asarray(values, float) for key, values in shift.items()},
        "reliability": read_reliability(metrics_dir / "reliability.tsv"),
    }


def markdown(runs: dict[str, dict]) -> str:
    """The comparison table, plus the ECE under rotation at every angle."""
    names = list(runs)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label, fmt in ROWS:
        cells = [_cell(run["metrics"].get(key), fmt) for run in runs.values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    angles = next(iter(runs.values()))["shift"]["angle"]
    for index, angle in enumerate(angles):
        cells = [f"{run['shift']['ece'][index]:.4f}" for run in runs.values()]
        lines.append(f"| ECE at {angle:g}° rotation | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def write(runs: dict[str, dict], out: Path) -> None:
    """``compare.md``, ``compare.json``, ``shift.png`` and ``reliability.png`` in ``out``."""
    write_text(out / "compare.md", markdown(runs))
    summary = {
        name: {key: run["metrics"].get(key) for key, _, _ in ROWS}
        | {"shift": {k: v.tolist() for k, v in run["shift"].items()}}
        for name, run in runs.items()
    }
    tables.write_json(out / "compare.json", summary)
    uncertainty_plots.plot_shift(
        {name: run["shift"] for name, run in runs.items()}, out / "shift.png"
    )
    uncertainty_plots.plot_reliability(
        {name: run["reliability"] for name, run in runs.items()}, out / "reliability.png"
    )


def parse_runs(pairs: list[str]) -> dict[str, Path]:
    runs = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise DataError(f"run {pair!r} must be NAME=FOLDER, e.g. BNN=. or MAP=runs/dense-map/0")
        runs[name] = Path(folder)
    return runs


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bnn.reporting.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="NAME=FOLDER, a run evaluated under FOLDER")
    parser.add_argument("--out", type=Path, default=Path("metrics/compare"))
    args = parser.parse_args(argv)
    runs = {name: load_run(folder) for name, folder in parse_runs(args.runs).items()}
    write(runs, args.out)
    print(markdown(runs), end="")


if __name__ == "__main__":
    sys.exit(main())
