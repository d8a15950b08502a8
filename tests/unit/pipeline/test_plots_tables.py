"""The plots stage reads every metrics table before drawing; a damaged one is one DataError."""

import pytest

from bnn.core import tables
from bnn.core.errors import DataError
from bnn.pipeline.paths import Paths
from bnn.pipeline.plots_stage import read_metric_tables


@pytest.fixture
def paths(tmp_path):
    paths = Paths.from_mapping({name: tmp_path / name for name in Paths.__annotations__})
    metrics = paths.metrics
    tables.write_table(metrics / "elbo.tsv", ["step", "elbo"], [(1, -3.0), (2, -2.0)])
    tables.write_table(
        metrics / "reliability.tsv",
        ["bin_lower", "bin_upper", "count", "confidence", "accuracy"],
        [(0.9, 1.0, 5, 0.95, 1.0)],
    )
    tables.write_table(metrics / "selective.tsv", ["coverage", "accuracy_entropy"], [(1.0, 0.9)])
    tables.write_table(metrics / "shift.tsv", ["angle", "ece"], [(0, 0.01)])
    return paths


def test_good_tables_are_read_as_arrays(paths):
    (steps, elbo), reliability, (coverage, accuracy), shift = read_metric_tables(paths)
    assert steps.tolist() == [1, 2] and elbo.tolist() == [-3.0, -2.0]
    assert reliability.count.tolist() == [5]
    assert coverage.tolist() == [1.0] and accuracy["accuracy_entropy"].tolist() == [0.9]
    assert shift["ece"].tolist() == [0.01]


@pytest.mark.parametrize(
    ("name", "content", "stage"),
    [
        ("elbo.tsv", "step\telbo\n1\tnot-a-number\n", "fit_advi"),
        ("elbo.tsv", "", "fit_advi"),
        ("reliability.tsv", "bin_lower\n0.1\n", "evaluate"),
        ("selective.tsv", "accuracy_entropy\n0.9\n", "evaluate"),
        ("shift.tsv", b"\xff\xfe\x00", "evaluate"),
        ("shift.tsv", None, "evaluate"),
    ],
)
def test_a_damaged_or_missing_table_names_the_file_and_the_stage(paths, name, content, stage):
    path = paths.metrics / name
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=rf"{name}.*dvc repro (-f )?{stage}"):
        read_metric_tables(paths)
