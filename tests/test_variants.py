"""Rows of the variants table, from MLflow runs."""

from types import SimpleNamespace

from bnn import variants


def run(params: dict, metrics: dict, start_time: int = 0):
    return SimpleNamespace(
        data=SimpleNamespace(params=params, metrics=metrics),
        info=SimpleNamespace(run_id=f"run{start_time}", start_time=start_time),
    )


BASE = {"model.name": "dense", "prior.family": "hier", "inference.n_iter": "6000"}
SCORES = {"test/accuracy": 0.98, "test/nll": 0.06, "fit/seconds": 600.0}


def test_rows_name_the_parametrisation_and_the_preset():
    centred = variants.row_from_run(run(BASE | {"prior.noncentred": "False"}, SCORES))
    noncentred = variants.row_from_run(run(BASE | {"prior.noncentred": "True"}, SCORES))
    original = variants.row_from_run(
        run({"model.name": "dense", "prior.family": "fixed", "preset": "original"}, SCORES)
    )
    assert (centred["prior"], noncentred["prior"]) == ("hier centred", "hier")
    assert centred["preset"] == "default" and original["preset"] == "original"
    assert centred["n_iter"] == 6000 and original["n_iter"] is None


def test_latest_run_of_each_variant_wins_and_unscored_runs_are_skipped():
    older = run(BASE | {"prior.noncentred": "True"}, SCORES, start_time=1)
    newer = run(BASE | {"prior.noncentred": "True"}, SCORES | {"test/accuracy": 0.99}, 2)
    unscored = run(BASE | {"prior.noncentred": "True"}, {"fit/seconds": 1.0}, 3)
    rows = variants.latest_rows([newer, unscored, older])
    assert [row["test_accuracy"] for row in rows] == [0.99]
    line = "| dense | hier | advi | default | 99.00% | 0.0600 |  | 10.0 min | 6,000 |"
    assert line in variants.markdown(rows)


def test_map_and_advi_of_the_same_network_are_separate_rows():
    advi = run(BASE | {"inference.method": "advi"}, SCORES | {"test/ece": 0.01}, 1)
    point = run(BASE | {"inference.method": "map"}, SCORES | {"test/ece": 0.03}, 2)
    rows = variants.latest_rows([advi, point])
    assert [(row["inference"], row["test_ece"]) for row in rows] == [("advi", 0.01), ("map", 0.03)]
