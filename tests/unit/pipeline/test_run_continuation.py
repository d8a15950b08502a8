"""A restarted fit continues its own MLflow run; runs of dead processes never stay RUNNING."""

import os
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bnn.core.signals import Interrupted
from bnn.pipeline import tracking

KEY = "0123abcd"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def left_running(uri: str, pid: int) -> str:
    """A run whose process went away without ending it (a SIGKILL)."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=tracking.ensure_experiment(uri, "e"))
    run = mlflow.start_run(tags={tracking.FIT_KEY_TAG: KEY})
    mlflow.set_tags({tracking.PID_TAG: str(pid), tracking.HOST_TAG: os.uname().nodename})
    mlflow.end_run("RUNNING")  # leaves the status as a killed process would
    return run.info.run_id


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_the_newest_orphan_is_continued_and_older_ones_end_failed(uri):
    older, newer = left_running(uri, dead_pid()), left_running(uri, dead_pid())
    assert tracking.run_to_continue(uri, "e", KEY, None) == newer
    assert MlflowClient(uri).get_run(older).info.status == "FAILED"


def test_the_checkpoints_run_wins_and_a_live_process_is_left_alone(uri):
    checkpointed = left_running(uri, dead_pid())
    orphan = left_running(uri, dead_pid())
    live = left_running(uri, os.getppid())
    assert tracking.run_to_continue(uri, "e", KEY, checkpointed) == checkpointed
    client = MlflowClient(uri)
    assert client.get_run(orphan).info.status == "FAILED"
    assert client.get_run(live).info.status == "RUNNING"


def test_no_run_of_the_key_means_a_new_run(uri):
    assert tracking.run_to_continue(uri, "e", KEY, None) is None


def test_an_interrupted_fit_run_ends_killed_and_is_continued_by_id(uri):
    with pytest.raises(Interrupted), tracking.fit_run(uri, "e", "name", {"a": 1}) as run_id:
        raise Interrupted(15)
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    with tracking.fit_run(uri, "e", "name", {"a": 1}, continue_run_id=run_id) as again:
        assert again == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params == {"a": "1"}
