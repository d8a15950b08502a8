"""Parallel runs logging to one new sqlite MLflow store lose no run and no value.

First four processes that make the calls a fit makes through
:mod:`bnn.pipeline.tracking` (a run with params and tags, metric batches,
curves, a reopened run) as fast as they can; then four real tiny fits,
``python src/fit.py`` in four processes. Both start together on a store that
does not exist yet: the case of parallel first fits, where MLflow's table
creation collided and three of four runs were lost.
"""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

from helpers_project import make_project, run
from helpers_tracking import check_parallel_writers

WRITERS = 4


def test_parallel_writers_on_a_new_store_lose_nothing(tmp_path):
    check_parallel_writers(
        f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", WRITERS
    )  # not there yet


def test_four_tiny_fits_in_parallel_each_log_a_finished_run(tmp_path, mirror):
    project, env = make_project(tmp_path, mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], project, env)
    assert not (project / "mlflow.db").exists()
    fits = [
        subprocess.Popen(
            [
                sys.executable,
                "src/fit.py",
                f"seed={job}",
                f"paths.models=jobs/{job}/models",
                f"paths.metrics=jobs/{job}/metrics",
                f"hydra.run.dir=jobs/{job}/hydra",
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for job in range(WRITERS)
    ]
    outputs = [fit.communicate(timeout=600)[0] for fit in fits]
    for job, fit in enumerate(fits):
        assert fit.returncode == 0, f"fit {job} failed:\n{outputs[job][-3000:]}"
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bnn-mnist")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == WRITERS
    assert sorted(r.data.params["seed"] for r in runs) == [str(j) for j in range(WRITERS)]
    logged = {m.source_run_id for m in client.search_logged_models([experiment.experiment_id])}
    for fitted in runs:
        assert fitted.info.status == "FINISHED"
        assert {"fit/seconds", "valid/accuracy_at_mean"} <= set(fitted.data.metrics)
        elbo = client.get_metric_history(fitted.info.run_id, "fit/elbo")
        assert [m.step for m in elbo] == list(range(2, 81, 2))
        checks = client.get_metric_history(fitted.info.run_id, "valid/accuracy")
        assert [m.step for m in checks] == [20, 40, 60, 80]
        assert fitted.info.run_id in logged
