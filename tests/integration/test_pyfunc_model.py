"""The MLflow pyfunc model, logged into a real sqlite store and loaded back."""

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bnn.core.errors import DataError
from bnn.serving import pyfunc_model
from bnn.serving.predict_table import predict_table
from helpers_posterior import RULE, save_model, tiny_posterior

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> str:
    """One model logged into a fresh sqlite store (creating the store takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = MlflowClient(uri).create_experiment(
        "tests", artifact_location=(root / "mlruns").as_uri()
    )
    model_dir = save_model(root / "models")
    (model_dir / "elbo.tsv").write_text("not part of the model\n")
    # Not mlflow.set_experiment: it exports MLFLOW_EXPERIMENT_ID to every later test.
    with mlflow.start_run(experiment_id=experiment):
        model_uri = pyfunc_model.log_model(model_dir)
    yield model_uri
    mlflow.set_tracking_uri(None)


def test_loaded_model_gives_the_predict_table(logged):
    images = np.random.default_rng(0).random((6, 784), dtype=np.float32)
    model = mlflow.pyfunc.load_model(logged)
    sources = [f"row[{i}]" for i in range(6)]

    # The same draws through another input path (a DataFrame, a copy): float32 products
    # may round differently, so probabilities agree to float32 precision; labels exactly.
    close = {"check_exact": False, "rtol": 1e-5, "atol": 1e-7}
    as_frame = model.predict(pd.DataFrame(images), params={"draws": 9, "seed": 2})
    expected = predict_table(tiny_posterior(), images, sources, RULE, draws=9, seed=2)
    pd.testing.assert_frame_equal(as_frame, expected, **close)

    as_array = model.predict(images.reshape(6, 28, 28))
    defaults = predict_table(tiny_posterior(), images, sources, RULE, draws=100, seed=0)
    pd.testing.assert_frame_equal(as_array, defaults, **close)


def test_the_logged_model_holds_its_files_code_and_pinned_requirements(logged):
    local = Path(mlflow.artifacts.download_artifacts(logged))
    logged_files = sorted(path.name for path in (local / "artifacts" / "model_dir").iterdir())
    assert logged_files == ["flag.json", "posterior.json", "posterior.npz"]  # not elbo.tsv
    assert (local / "code" / "bnn" / "serving" / "pyfunc_model.py").is_file()
    assert (local / "pyfunc_entry.py").is_file()  # a model from code: nothing pickled
    assert not list(local.rglob("*.pkl"))
    requirements = (local / "requirements.txt").read_text().split()
    assert f"mlflow=={mlflow.__version__}" in requirements
    assert all("==" in line for line in requirements)


def test_the_logged_model_loads_without_the_project_on_the_path(logged, tmp_path):
    # The editable install puts src/ on sys.path; without it, bnn must come from the model.
    script = f"""
import sys
sys.path = [entry for entry in sys.path if not entry.startswith({str(SRC)!r})]
import mlflow, numpy as np
mlflow.set_tracking_uri({mlflow.get_tracking_uri()!r})
table = mlflow.pyfunc.load_model({logged!r}).predict(np.zeros((2, 784), np.float32))
import bnn
print(len(table), bnn.__file__)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rows, bnn_file = result.stdout.split()
    assert rows == "2"
    assert Path(bnn_file).parts[-3:] == ("code", "bnn", "__init__.py")  # the logged copy


def test_logging_a_folder_without_a_flag_names_the_fix(tmp_path):
    model_dir = save_model(tmp_path / "models")
    (model_dir / "flag.json").unlink()
    # Refused before MLflow is called, so no run is needed.
    with pytest.raises(DataError, match="dvc repro -f fit_advi"):
        pyfunc_model.log_model(model_dir)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 783)), np.zeros((0, 784)), np.full((1, 784), 2.0), np.full((1, 784), np.nan)],
    ids=["783-pixels", "no-rows", "above-one", "nan"],
)
def test_bad_model_input_is_a_data_error(bad):
    with pytest.raises(DataError, match="model input"):
        pyfunc_model.pixel_rows(bad)
