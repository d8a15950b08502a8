"""The comparison table of model/prior variants: JSON, markdown and a plot.

Rows come from finished MLflow runs, so the table can be rebuilt from the store
at any time (``python -m bnn.pipeline.variants``); a sweep rebuilds it when it ends, and
logs the table of its own jobs to its parent run.

A variant is a (model, prior, inference, preset). Its row is the run with the most
iterations, the newest among equals (:data:`RULE`): a short probe or a smoke test of
a variant never replaces its full run, and re-running the full fit updates it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from bnn.core import tables
from bnn.core.atomic import atomic_path, write_text
from bnn.pipeline import tracking

COLUMNS = (
    "model",
    "prior",
    "inference",
    "preset",
    "test_accuracy",
    "test_nll",
    "test_ece",
    "fit_seconds",
    "n_iter",
)
KEY = ("model", "prior", "inference", "preset")
RULE = (
    "One row per model, prior, inference and preset: the run with the most iterations, "
    "the newest among equals."
)


def row_from_run(run) -> dict | None:
    """One table row from an MLflow run, or ``None`` if the run has no test metrics."""
    params, values = run.data.params, run.data.metrics
    # Ensembles have a table of their own (bnn.reporting.ensembles).
    if "test/accuracy" not in values or tracking.ENSEMBLE_TAG in getattr(run.data, "tags", {}):
        return None
    prior = params.get("prior.family")
    if prior == "hier" and params.get("prior.noncentred") != "True":
        prior = "hier centred"  # the other parametrisation, compared as a variant
    return {
        "model": params.get("model.name"),
        "prior": prior,
        # Runs logged before presets were named ran the defaults.
        "preset": params.get("preset", "default"),
        "inference": params.get("inference.method", "advi"),
        "test_accuracy": values["test/accuracy"],
        "test_nll": values.get("test/nll"),
        # Runs evaluated before calibration was measured have none.
        "test_ece": values.get("test/ece"),
        "fit_seconds": values.get("fit/seconds"),
        "n_iter": int(params["inference.n_iter"]) if "inference.n_iter" in params else None,
        "run_id": run.info.run_id,
    }


def best_rows(runs) -> list[dict]:
    """One row per (model, prior, inference, preset), chosen by :data:`RULE`, sorted by those keys.

    Each row's ``other_runs`` counts the scored runs of its variant that were set aside.
    A run that logged no ``inference.n_iter`` counts as 0 iterations.
    """
    by_variant: dict[tuple, list[tuple]] = {}
    for run in runs:
        row = row_from_run(run)
        if row is not None:
            rank = (row["n_iter"] or 0, run.info.start_time)
            by_variant.setdefault(tuple(row[key] for key in KEY), []).append((rank, row))
    rows = []
    for key in sorted(by_variant):
        _, row = max(by_variant[key], key=lambda ranked: ranked[0])
        rows.append(row | {"other_runs": len(by_variant[key]) - 1})
    return rows


def rows_from_store(uri: str, experiment: str, parent_run_id: str | None = None) -> list[dict]:
    """Rows of the runs in ``experiment``; only the children of ``parent_run_id`` if given."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
    runs = client.search_runs([found.experiment_id], filter_string=query, max_results=5000)
    return best_rows(runs)


def markdown(rows: list[dict]) -> str:
    """The table as GitHub markdown: :data:`RULE`, the table, and how many runs were set aside."""
    lines = [
        RULE,
        "",
        "| model | prior | inference | preset | test accuracy | test NLL | test ECE "
        "| fit time | iterations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        nll = "" if row["test_nll"] is None else f"{row['test_nll']:.4f}"
        ece = "" if row.get("test_ece") is None else f"{row['test_ece']:.4f}"
        minutes = "" if row["fit_seconds"] is None else f"{row['fit_seconds'] / 60:.1f} min"
        steps = "" if row["n_iter"] is None else f"{row['n_iter']:,}"
        lines.append(
            f"| {row['model']} | {row['prior']} | {row['inference']} | {row['preset']} "
            f"| {100 * row['test_accuracy']:.2f}% | {nll} | {ece} | {minutes} "
            f"| {steps} |"
        )
    set_aside = sum(row.get("other_runs", 0) for row in rows)
    if set_aside:
        runs = "run" if set_aside == 1 else "runs"
        lines += ["", f"Set aside by that rule: {set_aside} other {runs} of these variants."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path) -> None:
    """Test accuracy and NLL of each variant, side by side."""
    figure = Figure(figsize=(max(9.0, 1.5 * len(rows)), 3.8), layout="constrained")
    names = [
        "\n".join([row["model"], *row["prior"].split()])
        + ("" if row["inference"] == "advi" else f"\n{row['inference'].upper()}")
        + ("" if row["preset"] == "default" else f"\n{row['preset']}")
        for row in rows
    ]
    accuracy_axes, nll_axes = figure.subplots(1, 2)
    accuracy_axes.bar(names, [100 * row["test_accuracy"] for row in rows], color="tab:blue")
    accuracy_axes.set_ylim(min(100 * row["test_accuracy"] for row in rows) - 1, 100)
    accuracy_axes.set_ylabel("test accuracy (%)")
    nll_axes.bar(names, [row["test_nll"] or 0.0 for row in rows], color="tab:red")
    nll_axes.set_ylabel("test NLL")
    for axes in (accuracy_axes, nll_axes):
        axes.grid(axis="y", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def write(rows: list[dict], folder) -> None:
    """``variants.json``, ``variants.md`` and ``variants.png`` in ``folder``."""
    folder = Path(folder)
    tables.write_json_list(folder / "variants.json", [{k: row[k] for k in COLUMNS} for row in rows])
    write_text(folder / "variants.md", markdown(rows))
    if rows:
        plot(rows, folder / "variants.png")


def main(argv: list[str]) -> int:
    """Rebuild the table: ``python -m bnn.pipeline.variants [metrics folder] [experiment]``."""
    folder = Path(argv[0]) if argv else Path("metrics")
    experiment = argv[1] if len(argv) > 1 else "bnn-mnist"
    rows = rows_from_store(tracking.tracking_uri(), experiment)
    write(rows, folder)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
