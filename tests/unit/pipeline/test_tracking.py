"""MLflow logging into a real temporary sqlite store."""

import contextlib
import shutil
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bnn.pipeline import store_lock, tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_uri_defaults_to_sqlite_at_the_project_root(tmp_path, store, monkeypatch):
    assert tracking.tracking_uri() == store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'mlflow.db'}"
    # A relative sqlite path is anchored at the root too (queued experiments run elsewhere).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs/store.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'repo' / 'runs' / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"
    assert tracking.tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"


def test_fit_run_logs_params_series_and_metrics_to_one_run(store, tmp_path):
    params = {"model": {"name": "dense", "n_hidden": [8]}, "inference": {"n_iter": 30}}
    with tracking.fit_run(store, "tests", "dense-fixed", params) as run_id:
        tracking.log_metric_series(
            run_id, "fit/elbo", range(1, 2501), [-float(i) for i in range(2500)]
        )
        tracking.log_metrics({"fit_seconds": 1.5})
    with tracking.resumed_run(store, run_id) as resumed:
        assert resumed == run_id
        tracking.log_metrics({"test_accuracy": 0.9, "chi2_median_errors": None})
        tracking.log_text_artifact("a: 1\n", "config.yaml")
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.params == {
        "model.name": "dense",
        "model.n_hidden": "[8]",
        "inference.n_iter": "30",
    }
    assert run.data.metrics == {"fit/elbo": -2499.0, "fit/seconds": 1.5, "test/accuracy": 0.9}
    history = client.get_metric_history(run_id, "fit/elbo")
    assert len(history) == 2500 and history[-1].step == 2500 and history[-1].value == -2499
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location == (Path.cwd() / "mlruns").as_uri()
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_resuming_an_unknown_run_warns_and_logs_nothing(store, capsys):
    mlflow.set_tracking_uri(store)
    tracking.ensure_experiment(store, "tests")
    with tracking.resumed_run(store, "0" * 32) as resumed:
        assert resumed is None
    assert "not in" in capsys.readouterr().out


def test_namespaced_metric_names():
    assert tracking.mlflow_name("test_accuracy") == "test/accuracy"
    assert tracking.mlflow_name("fit_seconds") == "fit/seconds"
    assert tracking.mlflow_name("loss") == "loss"
    assert tracking.flatten({"a": {"b": 1, "c": {"d": None}}}) == {"a.b": "1", "a.c.d": "None"}


def test_a_copied_checkout_keeps_its_artifacts_in_its_own_mlruns(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)
    with tracking.fit_run(tracking.tracking_uri(), "exp", "first", {"a": 1}) as first:
        tracking.log_text_artifact("one", "note.txt")
    shutil.copytree(original, copy)  # the checkout, its mlflow.db and mlruns/ with it
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set by mlflow.set_tracking_uri: a new process
    uri = tracking.tracking_uri()
    with tracking.fit_run(uri, "exp", "second", {"a": 2}) as second:
        tracking.log_text_artifact("two", "note.txt")
    client = MlflowClient(uri)
    for run_id in (first, second):
        assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("exp")
    assert experiment.artifact_location == (copy / "mlruns").as_uri()
    # The first run's artifact is read from the copy's own mlruns/.
    downloaded = client.download_artifacts(first, "note.txt", str(tmp_path))
    assert Path(downloaded).read_text() == "one"
    assert sorted(p.read_text() for p in (original / "mlruns").rglob("note.txt")) == ["one"]
    assert sorted(p.read_text() for p in (copy / "mlruns").rglob("note.txt")) == ["one", "two"]
    # The original store is left as it was.
    kept = MlflowClient(f"sqlite:///{original / 'mlflow.db'}").get_run(first)
    assert kept.info.artifact_uri.startswith((original / "mlruns").as_uri())


def test_only_locations_under_another_mlruns_folder_are_relocated(tmp_path):
    database = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("create table experiments (artifact_location text)")
        db.execute("create table runs (artifact_uri text)")
        for location in (
            "file:///old/mlruns",
            "/old/mlruns/0",
            "s3://bucket/x",
            "file:///old/mlrunsx",
            (tmp_path / "mlruns").as_uri(),
        ):
            db.execute("insert into experiments values (?)", (location,))
        db.executemany(
            "insert into runs values (?)",
            [("file:///old/mlruns/1/abc/artifacts",), ("file:///old/mlruns_x/1",)],
        )
    assert store_lock.relocate_artifacts(database) == ["/old/mlruns", "file:///old/mlruns"]
    with contextlib.closing(sqlite3.connect(database)) as db:
        experiments = [row[0] for row in db.execute("select artifact_location from experiments")]
        runs = [row[0] for row in db.execute("select artifact_uri from runs")]
    here = tmp_path / "mlruns"
    assert experiments == [
        here.as_uri(),
        f"{here}/0",
        "s3://bucket/x",
        "file:///old/mlrunsx",
        here.as_uri(),
    ]
    assert runs == [f"{here.as_uri()}/1/abc/artifacts", "file:///old/mlruns_x/1"]
    assert store_lock.relocate_artifacts(database) == []  # nothing left to move
