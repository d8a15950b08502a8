"""Hydra multirun sweeps as one MLflow parent run with a child run per job.

:class:`MlflowSweepCallback` is registered in ``conf/config.yaml`` under
``hydra.callbacks``. It creates the parent with ``MlflowClient.create_run``
rather than ``mlflow.start_run``: an active run in the launcher process would
make every job's own ``start_run`` fail. The parent id travels to the jobs in
an environment variable of our own; ``MLFLOW_RUN_ID`` would make the jobs
*resume* the parent instead of nesting under it.

Hydra turns an exception raised in a callback into a warning and carries on,
so the hooks that refuse a sweep or fail its end exit through
:func:`~bnn.core.cli.user_errors_exit` (``SystemExit`` passes through Hydra).

Under a cluster launcher (``hydra/launcher=ray``) a job runs in a worker
process of some node, in that worker's folder and environment:
:meth:`MlflowSweepCallback.on_job_start` moves it into the project the sweep
was started from, and the launcher passes on the parent run and the tracking
URI (:mod:`bnn.core.ray_launcher`). A job whose process was lost leaves its run
RUNNING; the sweep's end marks every such child FAILED.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from bnn.core.cli import user_errors_exit
from bnn.core.errors import ConfigError, UserError
from bnn.core.ray_launcher import PASSED_TO_JOBS
from bnn.pipeline import tracking, variants

PARENT_RUN_ENV = "BNN_MLFLOW_PARENT_RUN_ID"


def child_tags() -> dict[str, str]:
    """Tags that nest a job's run under the sweep's parent run (none outside a sweep)."""
    parent = os.environ.get(PARENT_RUN_ENV)
    return {"mlflow.parentRunId": parent} if parent else {}


def swept_keys(config: DictConfig) -> set[str]:
    """The keys the sweep's overrides give more than one value (``a=1,2``, ``range(3)``)."""
    hydra = config.get("hydra")
    if hydra is None:
        return set()
    parsed = OverridesParser.create().parse_overrides(list(hydra.overrides.task))
    return {override.key_or_group for override in parsed if override.is_sweep_override()}


def assemble_ensemble(config: DictConfig, uri: str, parent: str) -> None:
    """Write the ensemble's manifest and flag rule once its members' jobs have ended."""
    from bnn.pipeline import config as settings  # imports PyTensor: only for ensembles
    from bnn.pipeline.ensemble_stage import assemble

    checked = settings.ensemble_settings(config.ensemble)
    assemble(
        checked.folder,
        checked.members,
        settings.seed(config),
        settings.stage_paths(config).processed,
        uri,
        parent,
        settings.flag_settings(config.flag),
    )


def runs_jobs_in_parallel(config: DictConfig) -> bool:
    """Whether this is a multirun whose launcher runs jobs in other processes (not basic)."""
    hydra = config.get("hydra")
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return False
    return "BasicLauncher" not in str(hydra.launcher.get("_target_", ""))


def move_into_project(config: DictConfig) -> None:
    """Run the job in the project the sweep started from, as every launcher on one machine does.

    A Ray worker starts in its node's folder; the data, the config and the
    checkpoints are the project's. The empty values the Ray launcher passes for
    unset variables are dropped, so that the job's defaults apply.
    """
    for name in PASSED_TO_JOBS:
        if os.environ.get(name) == "":
            del os.environ[name]
    hydra = config.get("hydra")
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return
    project = Path(hydra.runtime.cwd)
    if Path.cwd() == project:
        return
    if not (project / "conf").is_dir():
        raise ConfigError(
            f"this node ({socket.gethostname()}) has no project at {project}: every node "
            "needs a checkout of the same commit at the same path, with `dvc pull` done, "
            'or the path on a shared filesystem (README, "Beyond one machine")'
        )
    os.chdir(project)


def end_lost_children(client: MlflowClient, experiment_id: str, parent: str) -> list[str]:
    """Mark FAILED the sweep's child runs still RUNNING once every job has ended.

    A job whose process was killed (a lost node) never ends its run; a retried
    job continues it when it can (:func:`bnn.pipeline.tracking.run_to_continue`),
    and what is left RUNNING when the sweep ends belongs to no one. Returns their ids.
    """
    lost = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'",
    )
    for run in lost:
        client.set_tag(run.info.run_id, "bnn.ended_by", "the sweep's end: its process was lost")
        client.set_terminated(run.info.run_id, "FAILED")
    return [run.info.run_id for run in lost]


class MlflowSweepCallback(Callback):
    """Parent run at the start of a multirun; the variants tables at its end."""

    @user_errors_exit
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        swept = swept_keys(config)
        if "ensemble.member" in swept and swept != {"ensemble.member"}:
            others = ", ".join(sorted(swept - {"ensemble.member"}))
            raise ConfigError(
                f"an ensemble's sweep varies only ensemble.member, not {others}: its members "
                "are fits of one setting; run one sweep per setting, each with its own "
                "ensemble.folder"
            )
        uri = tracking.tracking_uri(config.mlflow.tracking_uri)
        experiment_id = tracking.ensure_experiment(uri, config.mlflow.experiment)
        # The launcher process has no HydraConfig yet; the config carries its hydra node.
        overrides = " ".join(config.hydra.overrides.task)
        parent = MlflowClient(uri).create_run(
            experiment_id,
            run_name=f"sweep: {overrides}" if overrides else "sweep",
            tags=tracking.run_tags() | {"bnn.sweep_dir": str(config.hydra.sweep.dir)},
        )
        os.environ[PARENT_RUN_ENV] = parent.info.run_id

    @user_errors_exit
    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        move_into_project(config)
        # Parallel jobs sharing PyTensor's compile cache wait on its lock; give each
        # worker process a folder of its own, before the job imports PyTensor. Only
        # parallel sweeps need it: a plain run, or the basic launcher's jobs in one
        # process, keep the shared cache (a fresh folder means compiling from scratch).
        if not runs_jobs_in_parallel(config):
            return
        if "pytensor" not in sys.modules and "base_compiledir" not in os.environ.get(
            "PYTENSOR_FLAGS", ""
        ):
            folder = Path(config.hydra.sweep.dir).resolve() / ".pytensor" / str(os.getpid())
            flags = os.environ.get("PYTENSOR_FLAGS", "")
            os.environ["PYTENSOR_FLAGS"] = ",".join(
                filter(None, [flags, f"base_compiledir={folder}"])
            )

    @user_errors_exit
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        parent = os.environ.pop(PARENT_RUN_ENV, None)
        if parent is None:
            return
        uri = tracking.tracking_uri(config.mlflow.tracking_uri)
        experiment = config.mlflow.experiment
        client = MlflowClient(uri)
        end_lost_children(client, client.get_run(parent).info.experiment_id, parent)
        if "ensemble.member" in swept_keys(config):
            try:
                assemble_ensemble(config, uri, parent)
            except UserError as error:  # a member failed: the sweep's error says which
                MlflowClient(uri).set_terminated(parent, "FAILED")
                raise UserError(f"the ensemble was not assembled: {error}") from None
        # metrics/ gets the whole table (every variant's newest run, as
        # `python -m bnn.pipeline.variants` builds it), so a sweep never drops other rows;
        # the parent run gets the table of its own jobs.
        variants.write(variants.rows_from_store(uri, experiment), Path(config.paths.metrics))
        with tempfile.TemporaryDirectory(prefix="bnn-sweep-") as folder:
            variants.write(variants.rows_from_store(uri, experiment, parent), Path(folder))
            for name in ("variants.json", "variants.md", "variants.png"):
                path = Path(folder) / name
                if path.is_file():
                    client.log_artifact(parent, str(path))
        client.set_terminated(parent, "FINISHED")
