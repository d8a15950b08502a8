"""The fitted model as an MLflow pyfunc, giving the same table as ``src/predict.py``.

Logged with :func:`log_model`, the model carries the posterior, the flag rule
and the ``bnn`` package itself, so it loads with ``mlflow.pyfunc.load_model``
where this project is not installed::

    model = mlflow.pyfunc.load_model(uri)
    table = model.predict(images, params={"draws": 200, "seed": 1})

``images`` is a DataFrame of 784 pixel columns or an array (N, 784) or
(N, 28, 28), floats in [0, 1] scaled like the training data (bytes / 256).
"""

import shutil
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from bnn.core.errors import DataError
from bnn.core.mnist import N_PIXELS
from bnn.predictive import ensemble
from bnn.predictive.posterior import ARRAYS_FILE, META_FILE
from bnn.serving import flag_rule
from bnn.serving.predict_table import COLUMNS, predict_table

with warnings.catch_warnings():
    # MLflow 3.17 infers a schema from its own ResponsesAgent type hints when
    # mlflow.pyfunc is first imported, and means to hide the warning that gives
    # (mlflow.types.responses); it still fails a run that has warnings as errors.
    warnings.filterwarnings(
        "ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning
    )
    import mlflow.pyfunc

DEFAULT_DRAWS = 100
DEFAULT_SEED = 0
MODEL_FILES = (ARRAYS_FILE, META_FILE, flag_rule.FLAG_FILE)
# What importing bnn (and its posterior's prior module) needs where the model is served.
REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "pymc", "pytensor")
_OUTPUT_TYPES = {"index": "long", "source": "string", "predicted": "long", "flag": "boolean"}


class BnnPyfunc(mlflow.pyfunc.PythonModel):
    """Posterior predictive with uncertainty flag, one row of :data:`COLUMNS` per image."""

    def load_context(self, context) -> None:
        model_dir = context.artifacts["model_dir"]
        self.posterior = ensemble.load_model(model_dir)
        self.rule = flag_rule.load(model_dir)

    # MLflow reads this hint: a DataFrame hint turns off its hint-based input
    # validation (ndarrays are welcome too), and no hint at all makes it warn.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Predict every row of ``model_input``; ``params`` may set ``draws`` and ``seed``.

        Parameters
        ----------
        context : mlflow.pyfunc.PythonModelContext
            Unused; the model was loaded in :meth:`load_context`.
        model_input : pandas.DataFrame or numpy.ndarray
            784 pixel columns, or an array (N, 784) or (N, 28, 28), floats in [0, 1].
        params : dict, optional
            ``draws`` (default 100) and ``seed`` (default 0), as in ``src/predict.py``.

        Returns
        -------
        pandas.DataFrame
            The :func:`bnn.serving.predict_table.predict_table` of the rows, sources ``row[i]``.
        """
        params = params or {}
        images = pixel_rows(model_input)
        return predict_table(
            self.posterior,
            images,
            [f"row[{i}]" for i in range(len(images))],
            self.rule,
            draws=int(params.get("draws", DEFAULT_DRAWS)),
            seed=int(params.get("seed", DEFAULT_SEED)),
        )


def pixel_rows(model_input: pd.DataFrame | np.ndarray) -> np.ndarray:
    """float32 (N, 784) from a pixel DataFrame or array; DataError on a bad shape or value."""
    array = np.asarray(model_input, dtype=np.float32)
    if array.ndim < 2 or array.shape[0] == 0 or array[0].size != N_PIXELS:
        raise DataError(
            f"model input of shape {array.shape}; pass a non-empty DataFrame of 784 pixel "
            "columns or an array (N, 784) or (N, 28, 28)"
        )
    array = array.reshape(len(array), N_PIXELS)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise DataError(
            "model input pixels must be finite floats in [0, 1]; divide bytes 0-255 by 256"
        )
    return array


def signature() -> ModelSignature:
    """No input schema (DataFrames and arrays both go through), the output columns and params.

    Declaring ``draws`` and ``seed`` is what lets MLflow pass them to
    :meth:`BnnPyfunc.predict`; undeclared params are dropped with a warning.
    """
    outputs = Schema([ColSpec(_OUTPUT_TYPES.get(name, "double"), name) for name in COLUMNS])
    params = ParamSchema(
        [ParamSpec("draws", "long", DEFAULT_DRAWS), ParamSpec("seed", "long", DEFAULT_SEED)]
    )
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def blank_example() -> pd.DataFrame:
    """One black image as a DataFrame of 784 pixel columns, ``pixel0`` to ``pixel783``."""
    return pd.DataFrame(
        np.zeros((1, N_PIXELS), np.float32), columns=[f"pixel{i}" for i in range(N_PIXELS)]
    )


def model_files(model_dir: Path) -> list[str]:
    """The files, relative to ``model_dir``, that the model loads from."""
    if not ensemble.is_ensemble(model_dir):
        return list(MODEL_FILES)
    names, _ = ensemble.read_manifest(model_dir)
    members = [f"{name}/{file}" for name in names for file in (ARRAYS_FILE, META_FILE)]
    return [ensemble.MANIFEST_FILE, flag_rule.FLAG_FILE, *members]


def log_model(model_dir, artifact_path: str = "model") -> str:
    """Log the model in ``model_dir`` into the active MLflow run; return its model URI.

    Only the files the model needs (:func:`model_files`) are logged, whatever
    else the folder holds; an ensemble's folder is logged with its members.
    Requirements are pinned to the installed versions, so MLflow does not
    infer them (slowly, by loading the model).

    Parameters
    ----------
    model_dir : str or os.PathLike
        Folder with ``posterior.npz``, ``posterior.json`` and ``flag.json``, or
        an ensemble's folder (``ensemble.json``, ``flag.json``, its members).
    artifact_path : str
        Name of the logged model in the run. The default is ``"model"``.

    Raises
    ------
    DataError
        If a file of the model is missing; the message names the fix.
    """
    model_dir = Path(model_dir)
    # Fail here, with the fix named, rather than when someone loads the model.
    ensemble.load_model(model_dir)
    flag_rule.load(model_dir)
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "model_dir"
        staged.mkdir()
        for name in model_files(model_dir):
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(model_dir / name, staged / name)
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={"model_dir": str(staged)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            pip_requirements=[f"{package}=={version(package)}" for package in REQUIREMENTS],
            signature=signature(),
            # MLflow warns without one; it also checks, by serving it, that the model loads.
            input_example=blank_example(),
        )
    return info.model_uri
