"""Sweep jobs: their compile folders, where a cluster's job runs, and runs their lost jobs left."""

import os
import sys

import pytest
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from bnn.core.errors import ConfigError
from bnn.core.ray_launcher import PASSED_TO_JOBS
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
                "runtime": {"cwd": os.getcwd()},
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


RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


def test_a_cluster_job_moves_into_the_project_it_was_launched_from(tmp_path, monkeypatch):
    project, node_folder = tmp_path / "project", tmp_path / "node"
    (project / "conf").mkdir(parents=True)
    node_folder.mkdir()
    monkeypatch.chdir(node_folder)  # where a Ray worker starts
    for name in PASSED_TO_JOBS:
        monkeypatch.setenv(name, "")  # what the launcher passes for a variable the driver lacks
    cfg = config(RunMode.MULTIRUN, RAY, tmp_path)
    cfg.hydra.runtime.cwd = str(project)
    sweep.move_into_project(cfg)
    assert os.getcwd() == str(project)
    assert not set(PASSED_TO_JOBS) & set(os.environ)


def test_a_node_without_the_project_is_one_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(RunMode.MULTIRUN, RAY, tmp_path)
    cfg.hydra.runtime.cwd = str(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="same commit at the same path, with `dvc pull`"):
        sweep.move_into_project(cfg)
    assert os.getcwd() == str(tmp_path)


def test_the_sweeps_end_marks_failed_the_children_left_running(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sweeps", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    nested = {"mlflow.parentRunId": parent}
    done, lost = (client.create_run(experiment, tags=nested).info.run_id for _ in range(2))
    client.set_terminated(done, "FINISHED")
    other = client.create_run(experiment).info.run_id  # another sweep's, or a plain run
    assert sweep.end_lost_children(client, experiment, parent) == [lost]
    assert client.get_run(lost).info.status == "FAILED"
    assert client.get_run(lost).data.tags["bnn.ended_by"].startswith("the sweep's end")
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"
