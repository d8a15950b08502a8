"""The BNN-vs-MAP comparison, from the files the evaluate stage writes."""

import numpy as np
import pytest

from bnn.core import tables
from bnn.evaluation import uncertainty
from bnn.reporting import compare
from bnn.reporting.metric_files import write_reliability


def write_run(folder, ece_at_angles, metrics):
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    probabilities = np.pad(probabilities, ((0, 0), (0, 8)))
    bins = uncertainty.reliability_bins(probabilities, labels)
    write_reliability(bins, folder / "metrics/reliability.tsv")
    rows = [
        [angle, 0.9, ece, 0.3, 0.1, 0.5, 0.01]
        for angle, ece in zip((0.0, 90.0), ece_at_angles, strict=True)
    ]
    columns = ["angle", "accuracy", "ece", "nll", "brier", "mean_entropy", "mean_mutual_info"]
    tables.write_table(folder / "metrics/shift.tsv", columns, rows)
    tables.write_json(folder / "metrics/metrics.json", metrics)


def test_table_and_figures_put_the_runs_side_by_side(tmp_path, capsys):
    scores = {"test_accuracy": 0.98, "test_nll": 0.05, "test_ece": 0.01, "error_auroc": None}
    write_run(tmp_path / "bnn", (0.01, 0.2), scores)
    write_run(tmp_path / "map", (0.02, 0.4), scores | {"test_ece": 0.03})
    out = tmp_path / "out"
    compare.main([f"BNN={tmp_path / 'bnn'}", f"MAP={tmp_path / 'map'}", "--out", str(out)])
    table = (out / "compare.md").read_text()
    assert table.splitlines()[0] == "| | BNN | MAP |"
    assert "| test ECE, 15 bins (lower is better) | 0.0100 | 0.0300 |" in table
    assert "| ECE at 90° rotation | 0.2000 | 0.4000 |" in table
    assert "| error AUROC (best score) | — | — |" in table
    assert capsys.readouterr().out == table
    for figure in ("shift.png", "reliability.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"


def test_a_missing_run_is_one_line_naming_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        compare.main([f"BNN={tmp_path}"])
    assert stop.value.code == 2
    assert "metrics.json not found; run the pipeline there first" in capsys.readouterr().err
