"""A real `python src/fit.py` killed (SIGKILL, SIGTERM, SIGINT) and rerun: it resumes exactly.

Per engine, one fit runs uninterrupted; the same fit is then stopped three times
at different steps, each time rerun with the same command, and must end with a
byte-identical posterior, the same ELBO history and validation curve, in one
MLflow run that ends FINISHED.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from bnn.core import tables
from bnn.pipeline import store_lock
from helpers_project import make_project, run

N_ITER = 3000
# Stop the fit once its checkpoint has passed each of these steps.
STOPS = {
    "fused": [(600, signal.SIGKILL), (1500, signal.SIGKILL), (2400, signal.SIGTERM)],
    "pymc": [(600, signal.SIGKILL), (1500, signal.SIGKILL), (2400, signal.SIGINT)],
}


def fit_command(engine: str, outputs: str, every_steps: int = 50) -> list[str]:
    return [
        sys.executable,
        "src/fit.py",
        f"inference.engine={engine}",
        f"inference.n_iter={N_ITER}",
        "inference.validate_every=100",
        f"checkpoint.every_steps={every_steps}",
        f"paths.models={outputs}/models",
        f"paths.metrics={outputs}/metrics",
    ]


def checkpoint_step(project: Path) -> int:
    """The step of the fit's checkpoint, or 0 while there is none."""
    for path in (project / ".checkpoints").glob("*.ckpt.npz"):
        try:
            with open(path, "rb") as handle, np.load(handle) as saved:
                return json.loads(str(saved["meta"]))["step"]
        except (OSError, ValueError, KeyError):
            return 0  # being replaced; read again
    return 0


def stop_after(command, project, env, step: int, signum: int) -> subprocess.CompletedProcess:
    """Start the fit, send ``signum`` once its checkpoint is past ``step``, return its result."""
    process = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while checkpoint_step(project) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the fit never reached the step"
        time.sleep(0.01)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def fit_runs(project: Path) -> list:
    # The lock the fits take too: a new store's tables are made by one process at a time.
    client = store_lock.client(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bnn-mnist")
    return client.search_runs([experiment.experiment_id])


def outputs(project: Path, folder: str) -> tuple[bytes, dict, list]:
    models, metrics = project / folder / "models", project / folder / "metrics"
    validation = tables.read_table(metrics / "validation.tsv")
    curve = list(zip(validation["step"], validation["accuracy"], strict=True))
    return (models / "posterior.npz").read_bytes(), tables.read_table(metrics / "elbo.tsv"), curve


@pytest.mark.parametrize("engine", ["fused", "pymc"])
def test_a_fit_killed_three_times_resumes_to_the_same_posterior(tmp_path, mirror, engine):
    project, env = make_project(tmp_path, mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], project, env)
    run(fit_command(engine, "reference"), project, env)
    reference_runs = {r.info.run_id for r in fit_runs(project)}

    command = fit_command(engine, "stopped")
    stopped_at = []
    for step, signum in STOPS[engine]:
        result = stop_after(command, project, env, step, signum)
        stopped_at.append(checkpoint_step(project))
        if signum == signal.SIGKILL:
            assert result.returncode == -signal.SIGKILL
            continue
        # A handled signal: one line saying how to resume, exit 128 + signal, run KILLED.
        assert result.returncode == 128 + signum, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("interrupted: ") and "rerun the same command" in lines[-1]
        assert "Traceback" not in result.stderr
        (killed,) = [r for r in fit_runs(project) if r.info.run_id not in reference_runs]
        assert killed.info.status == "KILLED"
    assert stopped_at == sorted(stopped_at) and stopped_at[0] >= 600 and stopped_at[-1] < N_ITER

    resumed = run(command, project, env)
    assert f"resuming from step {stopped_at[-1]:,}" in resumed.stderr
    assert outputs(project, "stopped") == outputs(project, "reference")
    assert not list((project / ".checkpoints").glob("*.ckpt.npz"))  # a finished fit removes it
    # Four starts of one fit are one MLflow run, continued, and FINISHED.
    (continued,) = [r for r in fit_runs(project) if r.info.run_id not in reference_runs]
    assert continued.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in fit_runs(project))
    meta = json.loads((project / "stopped/models/posterior.json").read_text())
    assert meta["mlflow_run_id"] == continued.info.run_id


def test_a_run_left_running_by_a_killed_fit_is_continued_not_duplicated(tmp_path, mirror):
    project, env = make_project(tmp_path, mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], project, env)
    # Killed before its first checkpoint: the run is left RUNNING, with nothing to resume.
    command = fit_command("fused", "out", every_steps=100_000)
    process = subprocess.Popen(command, cwd=project, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not fit_runs_or_none(project):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.kill()
    process.wait()
    (orphan,) = fit_runs(project)
    assert orphan.info.status == "RUNNING"
    run(command, project, env)
    (run_after,) = fit_runs(project)
    assert run_after.info.run_id == orphan.info.run_id
    assert run_after.info.status == "FINISHED"


def fit_runs_or_none(project: Path) -> list:
    if not (project / "mlflow.db").exists():
        return []
    try:
        return fit_runs(project)
    except (MlflowException, AttributeError):  # the fit is still creating the store
        return []
