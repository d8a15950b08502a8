"""Parallel runs logging to one new sqlite MLflow store lose no run and no value.

First four processes that make the calls a fit makes through
:mod:`bnn.pipeline.tracking` (a run with params and tags, metric batches,
curves, a reopened run) as fast as they can; then four real tiny fits,
``python src/fit.py`` in four processes. Both start together on a store that
does not exist yet: the case of parallel first fits, where MLflow's table
creation collided and three of four runs were lost.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import traceback

from mlflow.tracking import MlflowClient

from bnn.pipeline import tracking
from helpers_project import make_project, run

WRITERS = 4
ROUNDS = 60
POINTS = 10  # points per curve batch
PARAMS = {"job": 0, "inference": {f"p{i}": i for i in range(150)}}  # two log_params batches


def expected_value(writer: int, step: int) -> float:
    return writer + step / 1000


def log_like_a_fit(uri: str, writer: int, start, failures) -> None:
    """One process's fit-shaped logging; a traceback goes to ``failures``."""
    try:
        start.wait(timeout=120)
        with tracking.fit_run(uri, "concurrency", f"writer-{writer}", PARAMS) as run_id:
            for step in range(ROUNDS):
                tracking.log_metrics({f"fit_round{step}": expected_value(writer, step)})
                tracking.set_tags({f"round{step}": step})
                steps = range(step * POINTS, (step + 1) * POINTS)
                values = [expected_value(writer, s) for s in steps]
                tracking.log_metric_series(run_id, "valid/accuracy", steps, values)
        with tracking.resumed_run(uri, run_id):
            tracking.log_metrics({"test_accuracy": expected_value(writer, 0), "writer": writer})
    except Exception as error:
        failures.put(f"writer {writer}: {''.join(traceback.format_exception(error))[-2000:]}")


def test_parallel_writers_on_a_new_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # not there yet
    context = multiprocessing.get_context("spawn")  # real processes, each its own MLflow
    start, failures = context.Event(), context.Queue()
    writers = [
        context.Process(target=log_like_a_fit, args=(uri, writer, start, failures))
        for writer in range(WRITERS)
    ]
    for process in writers:
        process.start()
    start.set()
    for process in writers:
        process.join(timeout=300)
    errors = [failures.get() for _ in range(failures.qsize())] if not failures.empty() else []
    assert not errors, "\n".join(errors)
    assert [process.exitcode for process in writers] == [0] * WRITERS

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrency")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer-{w}" for w in range(WRITERS)]
    for logged in runs:
        writer = int(logged.data.metrics["writer"])
        assert logged.info.status == "FINISHED"
        assert len(logged.data.params) == 151
        assert {f"round{step}" for step in range(ROUNDS)} <= set(logged.data.tags)
        for step in range(ROUNDS):
            assert logged.data.metrics[f"fit/round{step}"] == expected_value(writer, step)
        history = client.get_metric_history(logged.info.run_id, "valid/accuracy")
        assert sorted((m.step, m.value) for m in history) == [
            (step, expected_value(writer, step)) for step in range(ROUNDS * POINTS)
        ]
        assert logged.data.metrics["test/accuracy"] == expected_value(writer, 0)


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
