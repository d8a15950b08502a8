"""Rows of the variants table, from MLflow runs."""

import json
from pathlib import Path
from types import SimpleNamespace

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from bnn.pipeline import sweep, variants


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


def test_among_equally_long_runs_the_newest_wins_and_unscored_runs_are_skipped():
    older = run(BASE | {"prior.noncentred": "True"}, SCORES, start_time=1)
    newer = run(BASE | {"prior.noncentred": "True"}, SCORES | {"test/accuracy": 0.99}, 2)
    unscored = run(BASE | {"prior.noncentred": "True"}, {"fit/seconds": 1.0}, 3)
    rows = variants.best_rows([newer, unscored, older])
    assert [row["test_accuracy"] for row in rows] == [0.99]
    line = "| dense | hier | advi | default | 99.00% | 0.0600 |  | 10.0 min | 6,000 |"
    assert line in variants.markdown(rows)
    assert variants.markdown(rows).startswith(variants.RULE)


def test_map_and_advi_of_the_same_network_are_separate_rows():
    advi = run(BASE | {"inference.method": "advi"}, SCORES | {"test/ece": 0.01}, 1)
    point = run(BASE | {"inference.method": "map"}, SCORES | {"test/ece": 0.03}, 2)
    rows = variants.best_rows([advi, point])
    assert [(row["inference"], row["test_ece"]) for row in rows] == [("advi", 0.01), ("map", 0.03)]


def test_a_sweep_keeps_other_rows_and_logs_its_own_table(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bnn-test")

    def finished_run(model: str, tags: dict | None = None) -> str:
        run_id = client.create_run(experiment, tags=tags or {}).info.run_id
        for key, value in (BASE | {"model.name": model, "prior.family": "fixed"}).items():
            client.log_param(run_id, key, value)
        for key, value in SCORES.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
        return run_id

    finished_run("dense")  # an earlier run, outside the sweep
    parent = client.create_run(experiment).info.run_id
    finished_run("conv", {"mlflow.parentRunId": parent})
    monkeypatch.setenv(sweep.PARENT_RUN_ENV, parent)
    config = OmegaConf.create(
        {
            "mlflow": {"tracking_uri": uri, "experiment": "bnn-test"},
            "paths": {"metrics": str(tmp_path / "metrics")},
        }
    )
    sweep.MlflowSweepCallback().on_multirun_end(config)
    table = json.loads((tmp_path / "metrics/variants.json").read_text())
    assert [row["model"] for row in table] == ["conv", "dense"]
    logged = client.download_artifacts(parent, "variants.json", str(tmp_path / "parent"))
    assert [row["model"] for row in json.loads(Path(logged).read_text())] == ["conv"]
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_short_probe_never_replaces_the_full_run_of_its_variant(tmp_path):
    """Real runs in a sqlite store: a full fit, then a 40-step probe and a smoke run of it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bnn-test")

    def scored_run(n_iter: int, accuracy: float, start_time: int, preset: str = "default"):
        run_id = client.create_run(experiment, start_time=start_time).info.run_id
        params = BASE | {"prior.family": "fixed", "inference.n_iter": str(n_iter)}
        for key, value in (params | {"preset": preset}).items():
            client.log_param(run_id, key, value)
        for key, value in (SCORES | {"test/accuracy": accuracy}).items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, "FINISHED")
        return run_id

    full = scored_run(6000, 0.985, start_time=1_000)
    scored_run(40, 0.61, start_time=2_000)  # the probe sweep, newer
    smoke = scored_run(300, 0.90, start_time=3_000, preset="smoke")
    rows = variants.rows_from_store(uri, "bnn-test")
    assert [(row["preset"], row["n_iter"], row["run_id"]) for row in rows] == [
        ("default", 6000, full),
        ("smoke", 300, smoke),
    ]
    table = variants.markdown(rows)
    assert "| dense | fixed | advi | default | 98.50% |" in table and "| 6,000 |" in table
    assert "Set aside by that rule: 1 other run of these variants." in table

    rerun = scored_run(6000, 0.986, start_time=4_000)  # the full fit again: it updates the row
    rows = variants.rows_from_store(uri, "bnn-test")
    assert [row["run_id"] for row in rows] == [rerun, smoke]
    assert rows[0]["other_runs"] == 2
