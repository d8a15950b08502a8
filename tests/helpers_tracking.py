"""Processes logging to one MLflow store as fast as a fit does; the check that nothing was lost.

Used against a new sqlite store (tests/integration/test_parallel_runs.py) and
against the MLflow server on PostgreSQL (tests/integration/test_cluster.py).
"""

from __future__ import annotations

import multiprocessing
import traceback

from mlflow.tracking import MlflowClient

from bnn.pipeline import tracking

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


def check_parallel_writers(uri: str, writers: int) -> None:
    """Start ``writers`` processes together on ``uri``; assert every run and value arrived."""
    context = multiprocessing.get_context("spawn")  # real processes, each its own MLflow
    start, failures = context.Event(), context.Queue()
    processes = [
        context.Process(target=log_like_a_fit, args=(uri, writer, start, failures))
        for writer in range(writers)
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=300)
    errors = [failures.get() for _ in range(failures.qsize())] if not failures.empty() else []
    assert not errors, "\n".join(errors)
    assert [process.exitcode for process in processes] == [0] * writers

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrency")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"writer-{w}" for w in range(writers))
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
