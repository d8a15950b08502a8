"""Ensembles end to end in a tiny project: the members' sweep, predict, the stages, pyfunc, DVC."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from bnn.data.dataset import load_split
from bnn.predictive import ensemble
from bnn.serving import flag_rule, pyfunc_model  # noqa: F401  (imports mlflow.pyfunc, quietly)
from bnn.serving.predict_table import predict_table
from helpers_project import ROOT, make_project, run

SWEEP = [sys.executable, "src/fit.py", "-m"]
LEFT = {
    "ensembles",
    "mlflow.db",
    "mlflow.db.lock",
    "mlruns",
    "sweep",
    "data",
    "multirun",
    "outputs",
}


def store(project):
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "bnn-mnist"]
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror):
    """A tiny project: its data, a dense ADVI ensemble of 3 (in two processes), a MAP one of 2."""
    project, env = make_project(tmp_path_factory.mktemp("ensembles"), mirror)
    for script in ("fetch", "preprocess"):
        run([sys.executable, f"src/{script}.py"], project, env)
    members = ["ensemble.member=range(3)", "ensemble.members=3"]
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"]
    run([*SWEEP, *members, *parallel], project, env)
    maps = [*SWEEP, "ensemble.member=range(2)", "ensemble.members=2", "inference=map"]
    run(maps, project, env)
    fitted = (project / "ensembles/dense-map/member-1/posterior.npz").read_bytes()
    rerun = run(maps, project, env)  # the same sweep again: every member is already there
    return project, env, {"rerun": rerun.stdout, "fitted": fitted}


def test_rerunning_the_sweep_keeps_the_members_it_has(project):
    project, _, first = project
    assert first["rerun"].count("is already fitted") == 2
    assert (project / "ensembles/dense-map/member-1/posterior.npz").read_bytes() == first["fitted"]
    assert "ensemble: 2 members" in first["rerun"]


def test_members_are_child_runs_of_one_parent_with_their_own_seeds(project):
    project, _, _ = project
    _, runs = store(project)
    members = [r for r in runs if r.data.tags.get("bnn.ensemble") == "ensembles/dense-advi"]
    (parent,) = [r for r in members if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in members if r is not parent]
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.data.tags["bnn.ensemble_member"] for r in children) == ["0", "1", "2"]
    assert len({r.data.tags["bnn.pid"] for r in children}) >= 2  # joblib: separate processes
    seed = json.loads((project / "ensembles/dense-advi/ensemble.json").read_text())["meta"]["seed"]
    for index in range(3):
        meta = json.loads(
            (project / f"ensembles/dense-advi/member-{index}/posterior.json").read_text()
        )
        assert meta["seed"] == ensemble.member_seed(seed, index)
    # The manifest names the parent run, which holds the ensemble as one pyfunc model.
    assert ensemble.load_model_meta(project / "ensembles/dense-advi").mlflow_run_id == (
        parent.info.run_id
    )
    assert parent.data.metrics["ensemble/members"] == 3


def test_predict_and_the_pyfunc_model_read_an_ensemble(project):
    project, env, _ = project
    folder = project / "ensembles/dense-advi"
    images = load_split(project / "data/processed", "test").images[:8]
    np.save(project / "digits.npy", np.round(images * 256).clip(0, 255).astype(np.uint8))
    result = run(
        [
            sys.executable,
            "src/predict.py",
            "--images",
            "digits.npy",
            "--model",
            str(folder),
            "--draws",
            "9",
        ],
        project,
        env,
    )
    table = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert len(table) == 8 and (table["mutual_info"] > 0).all()
    _, runs = store(project)
    (parent,) = [
        r
        for r in runs
        if r.data.tags.get("bnn.ensemble") == "ensembles/dense-advi"
        and "mlflow.parentRunId" not in r.data.tags
    ]
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/ensemble")
        served = model.predict(images.reshape(8, 784), params={"draws": 9, "seed": 0})
    finally:
        mlflow.set_tracking_uri(None)
    direct = predict_table(
        ensemble.load_model(folder),
        images.reshape(8, 784).astype(np.float32),
        [f"row[{i}]" for i in range(8)],
        flag_rule.load(folder),
        draws=9,
        seed=0,
    )
    np.testing.assert_allclose(served["confidence"], direct["confidence"], rtol=1e-6)
    np.testing.assert_array_equal(served["predicted"], direct["predicted"])
    np.testing.assert_allclose(table["confidence"], direct["confidence"], rtol=1e-5)


def test_the_stages_take_an_ensemble_and_report_its_disagreement(project):
    project, env, _ = project
    where = [
        "paths.models=ensembles/dense-advi",
        "paths.ppc=ppc-ens",
        "paths.metrics=metrics-ens",
        "paths.plots=plots-ens",
    ]
    for script in ("sample_ppc", "evaluate", "plots"):
        run([sys.executable, f"src/{script}.py", *where], project, env)
    scores = json.loads((project / "metrics-ens/metrics.json").read_text())
    assert scores["test_mean_member_disagreement"] > 0
    assert scores["test_mean_mutual_info"] >= scores["test_mean_member_disagreement"]
    assert (project / "plots-ens/reliability.png").is_file()
    # The ensemble's scores went to its parent run, and stay out of the variants table.
    _, runs = store(project)
    scored = [r for r in runs if "test/accuracy" in r.data.metrics]
    assert all(r.data.tags.get("bnn.ensemble") == "ensembles/dense-advi" for r in scored)


def test_the_comparison_scores_every_size_of_every_ensemble(project):
    project, env, _ = project
    run(
        [
            sys.executable,
            "src/compare_ensembles.py",
            "ensemble.compare.folders=[ensembles/dense-advi,ensembles/dense-map,ensembles/none]",
            "ensemble.compare.sizes=[1,2,3]",
            "ensemble.compare.draws_per_member=4",
        ],
        project,
        env,
    )
    rows = json.loads((project / "metrics/ensembles.json").read_text())
    assert [(r["inference"], r["members"]) for r in rows] == [
        ("advi", 1),
        ("advi", 2),
        ("advi", 3),
        ("map", 1),
        ("map", 2),
    ]
    keys = {
        "model",
        "prior",
        "inference",
        "members",
        "test_accuracy",
        "test_nll",
        "test_ece",
        "test_brier",
        "error_auroc",
        "ood_auroc_noise",
        "ood_auroc_scrambled",
    }
    assert all(keys <= set(row) for row in rows)
    assert rows[0]["test_mean_member_disagreement"] == 0  # one member
    assert rows[3]["test_mean_mutual_info"] == 0  # one MAP fit: no epistemic part
    assert rows[4]["test_mean_mutual_info"] > 0  # two MAP fits disagree
    assert rows[2]["draws"] == 12 and rows[4]["draws"] == 8
    for name in ("ensembles.md", "ensembles_k.png", "ensembles_shift.png"):
        assert (project / "metrics" / name).is_file()


def test_an_ensemble_sweep_of_two_settings_is_refused(project):
    project, env, _ = project
    result = subprocess.run(
        [*SWEEP, "ensemble.member=range(2)", "ensemble.members=2", "model=dense,conv"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "an ensemble's sweep varies only ensemble.member, not model" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_ensemble_with_a_member_missing_fails_its_sweep(project):
    project, env, _ = project
    # Member 1 only: at the sweep's end member 0 is missing, so no manifest is written.
    result = subprocess.run(
        [*SWEEP, "ensemble.member=range(1,2)", "ensemble.members=2", "ensemble.folder=partial"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "the ensemble was not assembled: partial: member-0 missing" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "partial/ensemble.json").exists()
    _, runs = store(project)
    (parent,) = [
        r
        for r in runs
        if "mlflow.parentRunId" not in r.data.tags
        and "ensemble.folder=partial" in r.data.tags.get("mlflow.runName", "")
    ]
    assert parent.info.status == "FAILED"


def test_the_dvc_pipeline_fits_and_evaluates_an_ensemble(project, tmp_path):
    project, env, _ = project
    copy = tmp_path / "dvc-project"
    shutil.copytree(
        project,
        copy,
        # The sources, conf/ and the root pipeline; not the fitted state of the other tests.
        ignore=lambda folder, names: [n for n in names if folder == str(project) and n in LEFT],
    )
    (copy / "ensembles").mkdir()
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / "ensembles" / name, copy / "ensembles" / name)
    shutil.copy(ROOT / ".dvcignore", copy / ".dvcignore")
    (copy / ".gitignore").write_text("mlflow.db\nmlruns/\noutputs/\nmultirun/\n")
    for args in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "hydra.enabled", "true"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "tiny project"],
    ):
        run(args, copy, env)
    run(["dvc", "exp", "run", "ensembles/dvc.yaml", "-S", "ensemble.members=2"], copy, env)
    folder = copy / "ensembles/dense-advi"
    assert ensemble.load_model(folder).names == ["member-0", "member-1"]
    scores = json.loads((copy / "metrics/ensemble/metrics.json").read_text())
    assert scores["test_mean_member_disagreement"] > 0
    status = run(["dvc", "status", "ensembles/dvc.yaml"], copy, env)
    assert "up to date" in status.stdout
