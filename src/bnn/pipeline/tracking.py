"""MLflow: where runs go, and how each stage adds to the fit's run.

The fit stage creates one run per fit; its id is saved with the posterior, and
the later stages (posterior predictive, evaluation, plots) reopen that run, so
one run holds a fit's whole story.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bnn.core.signals import Interrupted
from bnn.pipeline import store_lock

MAX_METRICS_PER_BATCH = 1000
# Tags that let a restarted fit find the run its predecessor left RUNNING.
FIT_KEY_TAG, PID_TAG, HOST_TAG = "bnn.fit_key", "bnn.pid", "bnn.host"
# An ensemble's runs: its parent run and each member's run carry the ensemble's
# folder, a member's run also its index (bnn.pipeline.ensemble_stage).
ENSEMBLE_TAG, MEMBER_TAG = "bnn.ensemble", "bnn.ensemble_member"
KILLED = RunStatus.to_string(RunStatus.KILLED)

# At import MLflow gives its logger a console handler of its own and stops it
# propagating; hand it back to the root logger, so that its INFO lines go where
# the stage's logging config sends them (the log file) and its warnings still show.
_mlflow_logger = logging.getLogger("mlflow")
_mlflow_logger.handlers.clear()
_mlflow_logger.propagate = True


def project_root() -> Path:
    """The repository a run belongs to.

    DVC sets ``DVC_ROOT``; under ``dvc exp run --queue`` it points to the real
    repository, not the temporary copy the experiment runs in, which is deleted.
    """
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(configured: str | None = None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``.

    A relative SQLite path is anchored at :func:`project_root` for the same reason.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{project_root() / 'mlflow.db'}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return f"{prefix}{project_root() / uri[len(prefix) :]}"
    return uri


def mlflow_name(key: str) -> str:
    """``test_accuracy`` -> ``test/accuracy``: the namespaced form the MLflow UI groups by."""
    namespace, _, rest = key.partition("_")
    return f"{namespace}/{rest}" if rest else key


def flatten(values: Mapping, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``, for MLflow params."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)
    return flat


def run_tags() -> dict[str, str]:
    """The git commit; under ``dvc exp run``, the experiment's name; in a Ray job, its node."""
    tags = {}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        tags["ray.node_id"] = ray.get_runtime_context().get_node_id()
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True
    )
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing.

    With a local SQLite store, artifacts go to ``mlruns/`` beside the database
    (:func:`bnn.pipeline.store_lock.artifact_root`): MLflow's default is relative
    to the working directory, which under ``dvc exp run --queue`` is a temporary
    copy that DVC deletes.
    """
    client = store_lock.client(uri)  # parallel first fits on a new store: one makes its tables
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    database = store_lock.sqlite_file(uri)
    location = store_lock.artifact_root(database).as_uri() if database else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process (a parallel sweep job) created it first.
        return client.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def fit_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping,
    tags: Mapping | None = None,
    continue_run_id: str | None = None,
) -> Iterator[str]:
    """Start the MLflow run of one fit (or continue ``continue_run_id``) and yield its id.

    A new run gets the params and tags; a ``parent_run_id`` in ``tags``
    (``mlflow.parentRunId``) nests it in a sweep. A continued run (a resumed fit)
    keeps its id, params and metrics. A SIGINT or SIGTERM ends the run KILLED,
    any other error FAILED.
    """
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=ensure_experiment(uri, experiment))
    owner = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    if continue_run_id:
        started = mlflow.start_run(run_id=continue_run_id)
    else:
        started = mlflow.start_run(run_name=run_name, tags={**run_tags(), **(tags or {})})
    with started as run:
        mlflow.set_tags(owner)
        if not continue_run_id:
            items = list(flatten(params).items())
            for first in range(0, len(items), 100):
                mlflow.log_params(dict(items[first : first + 100]))
        try:
            yield run.info.run_id
        except Interrupted:
            mlflow.end_run(KILLED)
            raise


def run_to_continue(
    uri: str, experiment: str, key: str, checkpoint_run_id: str | None
) -> str | None:
    """The run a restarted fit continues; runs its dead predecessors left RUNNING end FAILED.

    Every fit's run is tagged with its fit key (:func:`bnn.inference.checkpoint.fit_key`)
    and the process that runs it. The run named by the fit's checkpoint is continued;
    with no checkpoint, the newest run of the key whose process is gone (a SIGKILL
    before the first checkpoint, or a lost machine). Runs of processes still alive
    on this host, or on another host, are left alone.
    """
    client = store_lock.client(uri)  # the fit's first look at the store: it may be new
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{FIT_KEY_TAG}` = '{key}'",
        order_by=["attributes.start_time DESC"],
    )
    orphans = [run for run in runs if run.info.status == "RUNNING" and not _owner_alive(run)]
    if checkpoint_run_id and any(run.info.run_id == checkpoint_run_id for run in runs):
        chosen = checkpoint_run_id
    else:
        chosen = orphans[0].info.run_id if orphans else None
    for run in orphans:
        if run.info.run_id != chosen:
            client.set_tag(run.info.run_id, "bnn.ended_by", "a later start of the same fit")
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    return chosen


def _owner_alive(run) -> bool:
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True  # not ours to judge
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def resumed_run(uri: str, run_id: str | None) -> Iterator[str | None]:
    """Reopen the fit's run; yield ``None`` (and say why) when it is not in this store."""
    mlflow.set_tracking_uri(uri)
    if run_id:
        try:
            store_lock.client(uri).get_run(run_id)  # a copied store is relocated first
        except MlflowException:
            print(f"warning: MLflow run {run_id} is not in {uri}; not logging this stage")
            run_id = None
    if not run_id:
        yield None
        return
    with mlflow.start_run(run_id=run_id):
        try:
            yield run_id
        except Interrupted:
            mlflow.end_run(KILLED)
            raise


def log_metric_series(run_id: str, key: str, steps, values) -> None:
    """Log a whole curve in batches, not one call per point."""
    client = MlflowClient()
    metrics = [
        Metric(key=key, value=float(value), timestamp=0, step=int(step))
        for step, value in zip(steps, values, strict=True)
    ]
    for first in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[first : first + MAX_METRICS_PER_BATCH])


def log_metrics(values: Mapping[str, object]) -> None:
    """Log the numeric values under their namespaced names; ``None`` and text are skipped."""
    numbers = {
        mlflow_name(key): float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    mlflow.log_metrics(numbers)


def set_tags(values: Mapping[str, object]) -> None:
    """Tag the active run, skipping ``None`` values."""
    mlflow.set_tags({key: str(value) for key, value in values.items() if value is not None})


def log_text_artifact(text: str, file_name: str) -> None:
    """Log ``text`` as an artifact file of the active run."""
    mlflow.log_text(text, file_name)


def log_artifacts(folder: str | os.PathLike, artifact_path: str) -> None:
    """Log every file of ``folder`` under ``artifact_path`` of the active run."""
    mlflow.log_artifacts(str(folder), artifact_path)
