"""Every stage end to end on tiny synthetic MNIST: through the scripts and through DVC.

The project is copied into a temporary folder, shrunk to a 16-unit network and
a few dozen iterations, and fed from a real HTTP server on 127.0.0.1. MLflow
writes to the project's own sqlite store, as it does for users.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from bnn.core import tables
from bnn.evaluation import scoring
from bnn.pipeline import variants
from bnn.pipeline.params_file import in_sync
from helpers_imports import SRC, closure
from helpers_project import ROOT, make_project, run

STAGE_SCRIPTS = ["fetch", "preprocess", "fit", "sample_ppc", "evaluate", "plots"]
DVC_STAGE_SCRIPTS = dict(
    zip(
        ["fetch", "preprocess", "fit_advi", "sample_ppc", "evaluate", "plots"],
        STAGE_SCRIPTS,
        strict=True,
    )
)
PLOTS = (
    "elbo.png",
    "confusion.png",
    "chisquare.png",
    "reliability.png",
    "selective.png",
    "shift.png",
    "ood_entropy.png",
    "ood_mutual_info.png",
)


def mlflow_runs(project: Path):
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bnn-mnist")
    return client, client.search_runs([experiment.experiment_id])


def check_outputs(project: Path) -> dict:
    metrics = json.loads((project / "metrics/metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_nll"] > 0
    # The synthetic classes are easy: a working pipeline beats chance by far.
    assert metrics["test_accuracy"] > 0.5
    lines = (project / "metrics/predictions.csv").read_text().splitlines()
    assert lines[0] == "actual,predicted" and len(lines) == 61
    elbo = (project / "metrics/elbo.tsv").read_text().splitlines()
    assert elbo[0] == "step\telbo" and len(elbo) == 41
    checks = tables.read_table(project / "metrics/validation.tsv")
    assert checks["step"] == ["20", "40", "60", "80"]
    seconds = [float(value) for value in checks["seconds"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    fit = json.loads((project / "metrics/fit.json").read_text())
    assert fit["fit_seconds"] >= seconds[-1]
    assert 0.0 <= fit["valid_accuracy_at_mean"] <= 1.0
    for key in ("test_ece", "test_brier", "ood_auroc_noise", "ood_auroc_scrambled"):
        assert 0.0 <= metrics[key] <= 1.0, key
    if metrics["test_accuracy_mean_prob"] == 1.0:  # no errors to detect: the AUROC is undefined
        assert metrics["error_auroc"] is None and metrics["error_auroc_score"] is None
    else:
        assert 0.0 <= metrics["error_auroc"] <= 1.0
        assert metrics["error_auroc_score"] in scoring.SCORES
    shift = tables.read_table(project / "metrics/shift.tsv")
    assert shift["angle"] == ["0", "90", "180"] and len(shift["ece"]) == 3
    selective = tables.read_table(project / "metrics/selective.tsv")
    assert float(selective["coverage"][-1]) == 1.0
    assert float(selective["accuracy_entropy"][-1]) == pytest.approx(
        metrics["test_accuracy_mean_prob"]
    )
    reliability = tables.read_table(project / "metrics/reliability.tsv")
    assert sum(int(n) for n in reliability["count"]) == 60
    for plot in PLOTS:
        assert (project / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (project / "models/posterior.npz").is_file()
    return metrics


def check_run(client, run, metrics: dict) -> None:
    assert run.data.params["inference.n_iter"] == "80"
    assert run.data.params["model.n_hidden"] == "[16]"
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert run.data.metrics["test/nll"] == pytest.approx(metrics["test_nll"])
    assert "fit/seconds" in run.data.metrics and "ppc/seconds" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "fit/elbo")
    assert [m.step for m in history] == list(range(2, 81, 2))
    checks = client.get_metric_history(run.info.run_id, "valid/accuracy")
    assert [m.step for m in checks] == [20, 40, 60, 80]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {f"plots/{plot}" for plot in PLOTS}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "shift/ece")] == [0, 90, 180]
    # Runs are told apart by name and description; the logged model is named after the variant.
    variant = f"{run.data.params['model.name']}-{run.data.params['prior.family']}-advi-80"
    assert run.info.run_name == variant
    assert "80 steps" in run.data.tags["mlflow.note.content"]
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert variant in {m.name for m in logged if m.source_run_id == run.info.run_id}
    assert run.data.tags.get("error_auroc_score") == metrics["error_auroc_score"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml"}


def test_stage_scripts_end_to_end(tmp_path, mirror):
    project, env = make_project(tmp_path, mirror)
    for script in STAGE_SCRIPTS:
        run([sys.executable, f"src/{script}.py"], project, env)
    metrics = check_outputs(project)
    client, runs = mlflow_runs(project)
    assert len(runs) == 1
    check_run(client, runs[0], metrics)
    meta = json.loads((project / "models/posterior.json").read_text())
    assert meta["mlflow_run_id"] == runs[0].info.run_id


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, mirror):
    project, env = make_project(tmp_path_factory.mktemp("dvc"), mirror)
    run(["git", "init", "-q"], project, env)
    run(["dvc", "init", "-q"], project, env)
    run(["dvc", "config", "hydra.enabled", "true"], project, env)
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")
    (project / ".gitignore").write_text("mlflow.db\nmlruns/\noutputs/\n")
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "tiny project"], project, env)
    run(["dvc", "repro"], project, env)
    return project, env


def test_dvc_repro_runs_every_stage_and_logs_one_run(dvc_project):
    project, _ = dvc_project
    metrics = check_outputs(project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {
        "fetch",
        "preprocess",
        "fit_advi",
        "sample_ppc",
        "evaluate",
        "plots",
    }
    client, runs = mlflow_runs(project)
    assert len(runs) == 1
    check_run(client, runs[0], metrics)
    assert runs[0].data.tags["mlflow.source.git.commit"]


def test_dvc_plots_renders_every_declared_plot(dvc_project, tmp_path):
    project, env = dvc_project
    run(["dvc", "plots", "show", "-o", str(tmp_path / "html")], project, env)
    page = (tmp_path / "html" / "index.html").read_text()
    for title in ("ELBO during the fit", "Confusion matrix (mode of sampled labels)"):
        assert title in page
    for png in ("elbo", "confusion", "chisquare"):
        assert f'id="plots_{png}_png"' in page


def test_second_repro_does_nothing(dvc_project):
    project, env = dvc_project
    result = run(["dvc", "repro"], project, env)
    assert "Running stage" not in result.stdout
    assert (
        run(["dvc", "status"], project, env).stdout.strip() == "Data and pipelines are up to date."
    )


def changed_code_deps(project: Path, env: dict) -> dict[str, set[str]]:
    """``dvc status --json``: the code deps each stage reports modified."""
    status = json.loads(run(["dvc", "status", "--json"], project, env).stdout or "{}")
    changed = {}
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, dict) and "changed deps" in change:
                changed.setdefault(stage, set()).update(change["changed deps"])
    return changed


def test_editing_any_package_is_seen_by_every_stage_that_imports_it(dvc_project):
    project, env = dvc_project
    assert changed_code_deps(project, env) == {}
    scripts = {stage: SRC / f"{script}.py" for stage, script in DVC_STAGE_SCRIPTS.items()}
    imports = {stage: closure(path) for stage, path in scripts.items()}
    packages = sorted(p for p in (SRC / "bnn").iterdir() if (p / "__init__.py").is_file())
    for package in packages:
        # Its __init__ (run by every import from it) and one module inside.
        inner = sorted(set(package.glob("*.py")) - {package / "__init__.py"})[0]
        for module in (package / "__init__.py", inner):
            copy = project / module.relative_to(ROOT)
            original = copy.read_text()
            copy.write_text(original + "\n# an edit DVC must see\n")
            try:
                changed = changed_code_deps(project, env)
            finally:
                copy.write_text(original)
            expected = {stage for stage, files in imports.items() if module in files}
            folder = module.parent.relative_to(ROOT).as_posix()
            seen = {stage for stage, deps in changed.items() if folder in deps}
            assert expected <= seen, (module, expected, seen)
            assert expected or module.name != "__init__.py", f"no stage imports {folder}"
    assert changed_code_deps(project, env) == {}


def test_exp_run_set_param_composes_conf_and_tags_the_run(dvc_project):
    project, env = dvc_project
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline results"], project, env)
    result = run(
        ["dvc", "exp", "run", "-S", "inference.n_iter=60", "-n", "fewer-iters"], project, env
    )
    assert "Running stage 'fetch'" not in result.stdout  # only what the param touches re-runs
    assert yaml.safe_load((project / "params.yaml").read_text())["inference"]["n_iter"] == 60
    client, runs = mlflow_runs(project)
    tagged = [r for r in runs if r.data.tags.get("dvc.experiment") == "fewer-iters"]
    assert len(tagged) == 1 and tagged[0].data.params["inference.n_iter"] == "60"
    assert len(client.get_metric_history(tagged[0].info.run_id, "fit/elbo")) == 30


QUEUED = {"queued-sigma": "0.5", "queued-sigma-small": "0.2"}


def exp_show_metrics(project: Path, env: dict) -> dict[str, dict]:
    """``dvc exp show --json``: each named experiment's ``metrics/metrics.json``."""
    found = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], project, env).stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                files = (rev.get("data") or {}).get("metrics") or {}
                found[rev.get("name")] = (files.get("metrics/metrics.json") or {}).get("data")
    return found


QUEUE_DEADLINE_S = 900
STRANDED_S = 30


def start_queue_workers(project: Path, env: dict, count: int) -> None:
    """``dvc queue start -j count``, its output to a file rather than to a pipe.

    The workers are forked from the command (dvc-task's ``ManagedProcess``) and
    keep its stdout and stderr, so reading them through a pipe would wait for
    the whole queue to drain: a CI run sat there until its 600 s timeout.
    """
    with open(project.parent / "queue-start.log", "a") as log:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", str(count)],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert started.returncode == 0, (project.parent / "queue-start.log").read_text()


def queue_report(project: Path, env: dict, names) -> str:
    """What to show when the queue did not finish: its status, each task's log, DVC's processes."""
    parts = [run(["dvc", "queue", "status"], project, env).stdout]
    for name in names:
        logs = subprocess.run(
            ["dvc", "queue", "logs", name], cwd=project, env=env, capture_output=True, text=True
        )
        parts.append(f"--- dvc queue logs {name}\n{logs.stdout[-3000:]}{logs.stderr[-1000:]}")
    ps = subprocess.run(["ps", "-eo", "pid,etime,args"], capture_output=True, text=True)
    parts.append("\n".join(line for line in ps.stdout.splitlines() if "dvc" in line))
    return "\n".join(parts)


def drain_queue(project: Path, env: dict, names) -> str:
    """Poll ``dvc queue status`` until no task is queued or running; return the last status.

    DVC's workers can exit with tasks still queued (treeverse/dvc#10562); its
    documented remedy, ``dvc queue start`` again, is applied when no worker is
    left. A queue that has not drained by :data:`QUEUE_DEADLINE_S` fails the test
    with every task's log.
    """
    deadline = time.monotonic() + QUEUE_DEADLINE_S
    stranded_since = None
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], project, env).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        # Workers take a few seconds to register: only a lasting absence is stranding.
        if "Running" in status or "0 active, 0 idle" not in status:
            stranded_since = None
        elif stranded_since is None:
            stranded_since = time.monotonic()
        elif time.monotonic() - stranded_since > STRANDED_S:
            start_queue_workers(project, env, 1)
            stranded_since = None
        time.sleep(3)
    pytest.fail(
        f"the queue did not drain in {QUEUE_DEADLINE_S} s:\n{queue_report(project, env, names)}"
    )


def test_two_queue_workers_finish_every_experiment_with_its_metrics(dvc_project):
    """``dvc queue start -j 2``: two experiments run at once, both log to the repo's store."""
    project, env = dvc_project
    for name, sigma in QUEUED.items():
        queue = ["dvc", "exp", "run", "--queue", "-S", f"prior.sigma={sigma}", "-n", name]
        run(queue, project, env)
    start_queue_workers(project, env, 2)
    try:
        status = drain_queue(project, env, QUEUED)
    finally:  # no worker or fit outlives the test, whatever happened
        subprocess.run(
            ["dvc", "queue", "stop", "--kill"], cwd=project, env=env, capture_output=True
        )
    finished = [line for line in status.splitlines() if "Success" in line]
    assert all(any(name in line for line in finished) for name in QUEUED), queue_report(
        project, env, QUEUED
    )
    shown = exp_show_metrics(project, env)
    _, runs = mlflow_runs(project)
    for name, sigma in QUEUED.items():
        assert 0.0 <= shown[name]["test_accuracy"] <= 1.0, (name, shown.get(name))
        tagged = [r for r in runs if r.data.tags.get("dvc.experiment") == name]
        assert len(tagged) == 1 and tagged[0].data.params["prior.sigma"] == sigma
        assert tagged[0].info.status == "FINISHED"
        logged = tagged[0].data.metrics
        assert logged["test/accuracy"] == pytest.approx(shown[name]["test_accuracy"])
        assert {"test/nll", "fit/seconds", "ppc/seconds"} <= set(logged)
        # Artifacts live in the real repository, not in DVC's deleted temporary copy.
        assert tagged[0].info.artifact_uri.startswith((project / "mlruns").as_uri())
        assert mlflow.artifacts.list_artifacts(
            run_id=tagged[0].info.run_id,
            artifact_path="plots",
            tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
        )


def test_exp_run_conv_with_hier_prior_through_dvc(dvc_project):
    project, env = dvc_project
    run(
        ["dvc", "exp", "run", "-S", "model=conv", "-S", "prior=hier", "-n", "conv-hier"],
        project,
        env,
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["name"] == "conv" and params["prior"]["family"] == "hier"
    _, runs = mlflow_runs(project)
    (tagged,) = [r for r in runs if r.data.tags.get("dvc.experiment") == "conv-hier"]
    assert "test/accuracy" in tagged.data.metrics and "hyper/conv1_W_mean" in tagged.data.metrics
    summary = json.loads((project / "models/hyperpriors.json").read_text())
    assert set(summary) == {
        f"{layer}_{part}" for layer in ("conv1", "conv2", "hidden1", "output") for part in "Wb"
    }
    assert (project / "plots/hyperpriors.png").read_bytes()[:4] == b"\x89PNG"


RESULTS = (
    "models/posterior.npz",
    "models/posterior.json",
    "models/flag.json",
    "metrics/fit.json",
    "metrics/elbo.tsv",
    "metrics/validation.tsv",
    "metrics/metrics.json",
)


def results(project: Path) -> dict[str, bytes]:
    return {name: (project / name).read_bytes() for name in RESULTS}


def test_a_failed_exp_run_keeps_the_results_and_puts_params_back(dvc_project):
    """A typo stops in one line before DVC or the fit has touched anything."""
    project, env = dvc_project
    before = results(project)
    failed = subprocess.run(
        ["dvc", "exp", "run", "-S", "inference.n_iter=-1"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode != 0
    ours = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert ours == [
        "error: inference.n_iter must be a positive integer, got -1 (conf/inference/advi.yaml)"
    ], failed.stderr
    assert "Traceback" not in failed.stderr
    assert "params.yaml put back" in failed.stderr
    assert results(project) == before
    assert in_sync(project / "conf", project / "params.yaml")
    assert "n_iter: -1" in (project / ".dvc/tmp/params.failed.yaml").read_text()


def test_ctrl_c_during_an_exp_run_keeps_the_results_and_resumes(dvc_project):
    """SIGINT to the terminal's process group (DVC and the fit) in the middle of the fit."""
    project, env = dvc_project
    before = results(project)
    command = [
        "dvc",
        "exp",
        "run",
        "-S",
        "inference.n_iter=4000",
        "-S",
        "checkpoint.every_steps=50",
    ]
    process = subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not list((project / ".checkpoints").glob("*.ckpt.npz")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert any(
        line.startswith("interrupted: SIGINT") and "rerun the same command" in line
        for line in stderr.splitlines()
    ), stderr
    assert results(project) == before
    assert in_sync(project / "conf", project / "params.yaml")
    _, runs = mlflow_runs(project)
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1
    # The same command resumes the fit in the same run.
    resumed = run(command, project, env)
    assert "fit: resuming from step" in resumed.stderr
    _, runs = mlflow_runs(project)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert json.loads((project / "models/posterior.json").read_text())["mlflow_run_id"] == (
        killed[0].info.run_id
    )


def test_sweep_is_one_parent_run_with_a_child_per_job(tmp_path, mirror):
    """Both networks with both prior families, in parallel processes (joblib launcher)."""
    project, env = make_project(tmp_path, mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], project, env)
    run(
        [
            sys.executable,
            "src/fit.py",
            "-m",
            "model=dense,conv",
            "prior=fixed,hier",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweep.dir=sweep",
        ],
        project,
        env,
    )
    client, runs = mlflow_runs(project)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    variants_seen = {(r.data.params["model.name"], r.data.params["prior.family"]) for r in children}
    assert variants_seen == {
        ("dense", "fixed"),
        ("dense", "hier"),
        ("conv", "fixed"),
        ("conv", "hier"),
    }
    for child in children:
        assert {"test/accuracy", "test/nll", "fit/seconds", "fit/elbo"} <= set(child.data.metrics)
        has_hyper = any(key.startswith("hyper/") for key in child.data.metrics)
        assert has_hyper == (child.data.params["prior.family"] == "hier")
    rows = json.loads((project / "metrics/variants.json").read_text())
    assert len(rows) == 4
    assert all(set(row) == set(variants.COLUMNS) for row in rows)
    assert all(row["inference"] == "advi" and 0 <= row["test_ece"] <= 1 for row in rows)
    assert "variants.json" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # Every job wrote its own outputs, and had its own PyTensor compile folder.
    for job in range(4):
        assert (project / "sweep" / str(job) / "models" / "posterior.npz").is_file()
        assert (project / "sweep" / str(job) / "plots" / "elbo.png").is_file()
    # Unless the caller already chose a compile folder (PYTENSOR_FLAGS), which wins.
    if "base_compiledir" not in os.environ.get("PYTENSOR_FLAGS", ""):
        assert len(list((project / "sweep" / ".pytensor").iterdir())) >= 2
