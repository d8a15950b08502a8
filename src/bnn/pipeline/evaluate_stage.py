"""The ``evaluate`` stage: accuracy, NLL, calibration, error detection, shift and OOD scores."""

from __future__ import annotations

import numpy as np

from bnn.core import tables
from bnn.core.atomic import atomic_path
from bnn.evaluation import scoring
from bnn.pipeline import artifacts, tracking
from bnn.pipeline.paths import Paths
from bnn.predictive import ensemble
from bnn.reporting.metric_files import write_reliability, write_selective


def evaluate(paths: Paths, uri: str) -> dict:
    """Scores of the test predictive, its calibration, the shift curve and the OOD AUROCs.

    Writes ``metrics.json``, the DVC plots ``predictions.csv``,
    ``reliability.tsv``, ``selective.tsv`` and ``shift.tsv``, and the
    per-image scores the plots stage draws (``ppc/test_scores.npz``). Every
    ppc file must come from the posterior in ``models/`` (its fingerprint);
    nothing is written otherwise.
    """
    summaries, extra = artifacts.load_ppc(paths.ppc / "test.npz", paths.models, ("test",), True)
    summary, labels = summaries["test"], extra["labels"]
    shifted, shift_extra = artifacts.load_ppc(paths.ppc / "shift.npz", paths.models, labels=True)
    ood_summaries, _ = artifacts.load_ppc(paths.ppc / "ood.npz", paths.models)
    result = scoring.evaluate_test(summary, labels)
    shift_rows = scoring.shift_rows(
        {float(angle): s for angle, s in shifted.items()}, shift_extra["labels"]
    )
    test_scores = scoring.scores_of(summary)
    scores = result.metrics | scoring.ood_metrics(test_scores, ood_summaries)

    tables.write_json(paths.metrics / "metrics.json", scores)
    rows = zip(labels, result.per_image["predicted"], strict=True)
    tables.write_table(paths.metrics / "predictions.csv", ["actual", "predicted"], rows, sep=",")
    write_reliability(result.reliability, paths.metrics / "reliability.tsv")
    write_selective(result.selective, paths.metrics / "selective.tsv")
    shift_columns = list(shift_rows[0])
    tables.write_table(
        paths.metrics / "shift.tsv",
        shift_columns,
        ([r[c] for c in shift_columns] for r in shift_rows),
    )
    ood_arrays = {
        f"ood/{name}/{score}": values
        for name, s in ood_summaries.items()
        for score, values in scoring.scores_of(s).items()
    }
    with atomic_path(paths.ppc / "test_scores.npz") as tmp, open(tmp, "wb") as handle:
        stamp = {artifacts.FINGERPRINT_KEY: extra[artifacts.FINGERPRINT_KEY]}
        np.savez(handle, **result.per_image, **ood_arrays, **stamp)

    with tracking.resumed_run(uri, ensemble.load_model_meta(paths.models).mlflow_run_id) as active:
        if active:
            tracking.log_metrics(scores)
            tracking.set_tags({"error_auroc_score": scores["error_auroc_score"]})
            for column in shift_columns[1:]:
                angles = [round(r["angle"]) for r in shift_rows]
                tracking.log_metric_series(
                    active, f"shift/{column}", angles, [r[column] for r in shift_rows]
                )
    print(headline(scores))
    return scores


def headline(scores: dict) -> str:
    """The evaluate stage's one console line: the six numbers a reader looks for first.

    A score that is undefined on this test set (an error AUROC with no errors) reads n/a.
    """

    def number(key: str, spec: str) -> str:
        return "n/a" if scores.get(key) is None else format(scores[key], spec)

    ood = [key for key in scores if key.startswith("ood_auroc_") and key.count("_") == 2]
    parts = [
        f"accuracy {number('test_accuracy', '.2%')}",
        f"NLL {number('test_nll', '.4f')}",
        f"ECE {number('test_ece', '.4f')}",
        f"Brier {number('test_brier', '.4f')}",
        f"error AUROC {number('error_auroc', '.3f')} ({scores.get('error_auroc_score')})",
        *(f"OOD AUROC {key.removeprefix('ood_auroc_')} {number(key, '.3f')}" for key in ood),
    ]
    return "evaluate: " + ", ".join(parts) + " (all in metrics/metrics.json)"
