"""MLflow logging into a real temporary sqlite store."""

from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bnn.pipeline import tracking


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
