"""Beyond one machine, with the real processes of ``make services`` (services/stack.py).

A Ray cluster of two nodes (a head and a worker joined with ``ray start
--address``), ``mlflow server`` on a throwaway PostgreSQL with its artifacts
proxied to an S3 bucket (moto in server mode), and a DVC remote in another
bucket; all on 127.0.0.1, started once for the module and stopped after it.
The test that kills the worker node runs last.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from services.stack import ARTIFACT_BUCKET, DVC_BUCKET, Stack

from helpers_project import ROOT, make_project, run
from helpers_tracking import check_parallel_writers

VARIANTS = {("dense", "fixed"), ("dense", "hier"), ("conv", "fixed"), ("conv", "hier")}
SWEEP = ["src/fit.py", "-m", "model=dense,conv", "prior=fixed,hier", "hydra/launcher=ray"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = Stack(tmp_path_factory.mktemp("services"), ray_workers=1).up()
    yield started
    started.down()


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror, stack):
    """A tiny project with its data, whose runs go to the stack's MLflow server."""
    folder, env = make_project(tmp_path_factory.mktemp("cluster"), mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], folder, env)
    return folder, env | stack.client_env()


def sweep_runs(client: MlflowClient, sweep_dir: Path):
    """The parent run of the sweep that wrote ``sweep_dir``, and its children."""
    experiment = client.get_experiment_by_name("bnn-mnist")
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`bnn.sweep_dir` = '{sweep_dir}'"
    )
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    return parent, children


def variant(child) -> tuple[str, str]:
    return child.data.params["model.name"], child.data.params["prior.family"]


def test_a_sweep_on_two_ray_nodes_logs_to_the_server_with_artifacts_in_s3(project, stack):
    folder, env = project
    sweep_dir = folder / "ray-sweep"
    result = run([sys.executable, *SWEEP, f"hydra.sweep.dir={sweep_dir}"], folder, env)
    client = MlflowClient(stack.tracking_uri)
    parent, children = sweep_runs(client, sweep_dir)
    assert parent.info.status == "FINISHED", result.stdout[-2000:]
    assert {variant(child) for child in children} == VARIANTS and len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"test/accuracy", "test/nll", "fit/seconds", "fit/elbo"} <= set(child.data.metrics)
    # Two jobs at a time, one per node (each node has 2 CPUs, each job asks for 2).
    assert len({child.data.tags["ray.node_id"] for child in children}) == 2
    # Every job wrote into the project, not into its Ray worker's folder.
    for job in range(4):
        assert (sweep_dir / str(job) / "models" / "posterior.npz").is_file()
    # Artifacts go through the server to the bucket, and come back through it.
    child = children[0]
    assert child.info.artifact_uri.startswith("mlflow-artifacts:")
    config = Path(client.download_artifacts(child.info.run_id, "config.yaml", str(folder)))
    assert "model:" in config.read_text()
    keys = [o["Key"] for o in stack.s3_client().list_objects_v2(Bucket=ARTIFACT_BUCKET)["Contents"]]
    assert any(child.info.run_id in key and key.endswith("config.yaml") for key in keys)
    assert "variants.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_same_seed_gives_the_same_metrics_under_ray_and_the_basic_launcher(project, stack):
    folder, env = project
    client = MlflowClient(stack.tracking_uri)
    _, on_ray = sweep_runs(client, folder / "ray-sweep")
    basic_dir = folder / "basic-sweep"
    run(
        [
            sys.executable,
            "src/fit.py",
            "-m",
            "model=dense,conv",
            "prior=fixed",
            f"hydra.sweep.dir={basic_dir}",
        ],
        folder,
        env,
    )
    _, on_basic = sweep_runs(client, basic_dir)
    assert len(on_basic) == 2
    for child in on_basic:
        (twin,) = [r for r in on_ray if variant(r) == variant(child)]
        test_metrics = {k: v for k, v in child.data.metrics.items() if k.startswith("test/")}
        assert test_metrics and test_metrics == {k: twin.data.metrics[k] for k in test_metrics}
        assert "ray.node_id" not in child.data.tags


def test_eight_parallel_writers_to_the_server_lose_nothing(stack):
    check_parallel_writers(stack.tracking_uri, 8)


def test_dvc_push_then_a_fresh_clone_pulls_everything_and_reruns_nothing(tmp_path, mirror, stack):
    (tmp_path / "origin").mkdir()
    folder, env = make_project(tmp_path / "origin", mirror)
    run(["git", "init", "-q"], folder, env)
    run(["dvc", "init", "-q"], folder, env)
    shutil.copy(ROOT / ".dvc" / "config", folder / ".dvc" / "config")  # the committed remote
    shutil.copy(ROOT / ".dvcignore", folder / ".dvcignore")
    # A remote folder of this test's own in the stack's bucket.
    run(
        ["dvc", "remote", "modify", "storage", "url", f"s3://{DVC_BUCKET}/{tmp_path.name}"],
        folder,
        env,
    )
    stack.configure_dvc_remote(folder)
    assert "secret_access_key" not in (folder / ".dvc" / "config").read_text()
    (folder / ".gitignore").write_text("mlflow.db\nmlruns/\noutputs/\n")
    run(["dvc", "repro"], folder, env)
    run(["git", "add", "-A"], folder, env)
    run(["git", "commit", "-qm", "a tiny project, run"], folder, env)
    pushed = run(["dvc", "push"], folder, env)
    assert "pushed" in pushed.stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(folder), str(clone)], tmp_path, env)
    assert not (clone / "models").exists()
    stack.configure_dvc_remote(clone)  # credentials are per machine, never in git
    run(["dvc", "pull"], clone, env)
    status = run(["dvc", "status"], clone, env)
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    again = run(["dvc", "repro"], clone, env)
    assert "Running stage" not in again.stdout
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    for stage in ("preprocess", "fit_advi", "sample_ppc", "evaluate"):
        for out in lock["stages"][stage]["outs"]:
            assert tree_bytes(clone / out["path"]) == tree_bytes(folder / out["path"]), out


def checkpointed_run_node(client: MlflowClient, path: Path) -> str | None:
    """The Ray node whose fit saved the checkpoint ``path`` (None if it cannot tell yet)."""
    try:
        with np.load(path) as saved:
            run_id = json.loads(str(saved["meta"]))["extra"]["mlflow_run_id"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # replaced or removed while being read
    return client.get_run(run_id).data.tags.get("ray.node_id")


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) by its relative name."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {
        str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()
    }


def test_a_worker_node_lost_mid_sweep_the_sweep_finishes_and_no_run_is_left_running(project, stack):
    folder, env = project
    sweep_dir = folder / "lost-node-sweep"
    checkpoints = folder / ".checkpoints"
    shutil.rmtree(checkpoints, ignore_errors=True)
    (worker,) = [node["node_id"] for node in stack.ray_nodes() if not node["head"]]
    client = MlflowClient(stack.tracking_uri)
    args = [
        sys.executable,
        *SWEEP,
        "inference.n_iter=3000",
        "checkpoint.every_steps=100",
        "checkpoint.every_seconds=5",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    log = folder / "lost-node-sweep.log"
    with open(log, "w") as out:
        sweep = subprocess.Popen(args, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The worker node goes once a fit running on it has saved a checkpoint, whatever
        # the machine's speed and whichever jobs overlap.
        deadline = time.monotonic() + 600
        while not any(
            checkpointed_run_node(client, path) == worker for path in checkpoints.glob("*.ckpt.npz")
        ):
            assert sweep.poll() is None and time.monotonic() < deadline, (
                "no checkpoint of a fit on the worker node: " + log.read_text()[-4000:]
            )
            time.sleep(0.2)
        stack.kill("ray-worker-1")
        sweep.wait(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    output = log.read_text()
    assert sweep.returncode == 0, output[-4000:]
    client = MlflowClient(stack.tracking_uri)
    parent, children = sweep_runs(client, sweep_dir)
    assert parent.info.status == "FINISHED"
    assert all(child.info.status in ("FINISHED", "FAILED") for child in children)
    finished = [child for child in children if child.info.status == "FINISHED"]
    # The lost job ran again on the head and continued its run from its checkpoint.
    assert {variant(child) for child in finished} == VARIANTS, output[-4000:]
    assert "fit: resuming from step" in output
    for child in finished:
        assert "test/accuracy" in child.data.metrics
