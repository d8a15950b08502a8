"""Which runs get a PyTensor compile folder of their own: only parallel sweep jobs."""

import os
import sys

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from bnn.pipeline import sweep

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def config(mode: RunMode, launcher: str, tmp_path):
    return OmegaConf.create(
        {
            "hydra": {
                "mode": mode,
                "launcher": {"_target_": launcher},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )


@pytest.mark.parametrize(
    ("mode", "launcher", "parallel"),
    [
        (RunMode.RUN, BASIC, False),  # a plain `python src/fit.py` keeps the shared cache
        (RunMode.MULTIRUN, BASIC, False),  # one process, one job after another
        (RunMode.MULTIRUN, JOBLIB, True),
    ],
)
def test_only_parallel_sweeps_get_their_own_compile_folder(
    mode, launcher, parallel, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTENSOR_FLAGS", "")
    cfg = config(mode, launcher, tmp_path)
    assert sweep.runs_jobs_in_parallel(cfg) is parallel
    sweep.MlflowSweepCallback().on_job_start(cfg)
    # A folder is only worth setting before PyTensor is imported (a fresh worker process).
    expected = parallel and "pytensor" not in sys.modules
    assert ("base_compiledir" in os.environ["PYTENSOR_FLAGS"]) is expected
