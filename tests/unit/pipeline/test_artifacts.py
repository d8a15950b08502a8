"""Artifacts that cannot mislead: every damaged or stale file is one line naming it and its rebuild.

The stages run for real on a tiny saved posterior (no fit): sample_ppc writes
data/ppc/*.npz with the posterior's fingerprint, evaluate checks it, plots checks
evaluate's. Each corrupt case then goes through the library and, at least once,
through the real CLI in a subprocess: exit 2, one stderr line, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bnn.core import tables
from bnn.core.errors import DataError
from bnn.data.dataset import LabelledImages, save_split
from bnn.model.specs import DenseSpec
from bnn.pipeline import artifacts
from bnn.pipeline.evaluate_stage import evaluate
from bnn.pipeline.paths import Paths
from bnn.pipeline.plots_stage import load_scores
from bnn.pipeline.ppc_stage import sample_ppc
from bnn.predictive import posterior
from bnn.serving import flag_rule
from helpers_mnist import synthetic_mnist
from helpers_posterior import save_model, tiny_posterior

ROOT = Path(__file__).resolve().parents[3]
FIT = "dvc repro -f fit_advi"
PPC_SETTINGS = {
    "draws": 4,
    "chunk_draws": 2,
    "chunk_images": None,
    "shift": {"angles": (0.0, 90.0), "images": 6, "draws": 2},
    "ood": {"sets": ("noise",), "images": 6, "draws": 2},
}


def project(root: Path) -> Paths:
    paths = Paths.from_mapping(
        {name: root / name for name in ("raw", "processed", "models", "ppc", "metrics", "plots")}
    )
    arrays = synthetic_mnist(n_train=4, n_test=12, seed=1)
    test = LabelledImages(arrays["test_images"].astype(np.float32) / 256, arrays["test_labels"])
    save_split(test, paths.processed / "test.npz")
    save_model(paths.models)
    return paths


def uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def paths(tmp_path) -> Paths:
    return project(tmp_path)


def run_ppc(paths: Paths, root: Path, **overrides) -> None:
    sample_ppc(paths, seed=0, uri=uri(root), **(PPC_SETTINGS | overrides))


def refit(paths: Paths) -> None:
    """A new posterior in models/, as a second `dvc repro fit_advi` would leave it."""
    posterior.save(tiny_posterior(seed=11), paths.models)


def test_the_chain_runs_and_stamps_every_file(paths, tmp_path):
    run_ppc(paths, tmp_path)
    current = posterior.fingerprint(paths.models)
    for name in ("test", "shift", "ood"):
        with np.load(paths.ppc / f"{name}.npz") as stored:
            assert str(stored[artifacts.FINGERPRINT_KEY]) == current
    evaluate(paths, uri(tmp_path))
    assert str(load_scores(paths)[artifacts.FINGERPRINT_KEY]) == current


def test_fingerprint_changes_with_either_file(paths):
    before = posterior.fingerprint(paths.models)
    meta = json.loads((paths.models / "posterior.json").read_text())
    (paths.models / "posterior.json").write_text(json.dumps(meta | {"mlflow_run_id": "other"}))
    assert posterior.fingerprint(paths.models) != before


# --- the model folder ------------------------------------------------------------------------


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def empty_npz(path: Path) -> None:
    write_npz(path)


def write_npz(path: Path, *bare: np.ndarray, **arrays: np.ndarray) -> None:
    """An archive of ``arrays``, or with one ``bare`` array a plain .npy, under ``path``."""
    with open(path, "wb") as handle:
        if bare:
            np.save(handle, bare[0])
        else:
            np.savez(handle, **arrays)


def edit_json(name: str, change):
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return apply


MODEL_CASES = {
    "npz truncated": (lambda f: truncate(f / "posterior.npz"), "posterior.npz is truncated"),
    "npz zero bytes": (lambda f: (f / "posterior.npz").write_bytes(b""), "posterior.npz is"),
    "npz empty archive": (lambda f: empty_npz(f / "posterior.npz"), "holds no arrays"),
    "npz a bare array": (
        lambda f: write_npz(f / "posterior.npz", np.zeros(3)),
        "one bare array",
    ),
    "npz an sd missing": (
        lambda f: write_npz(f / "posterior.npz", **{"mean/output_W": np.zeros((6, 10))}),
        "a mean without an sd",
    ),
    "npz NaN means": (
        lambda f: posterior.save(
            posterior.Posterior(
                {k: np.full_like(v, np.nan) for k, v in tiny_posterior().means.items()},
                tiny_posterior().stds,
                tiny_posterior().meta,
            ),
            f,
        ),
        "NaN, infinite or negative-sd",
    ),
    "json malformed": (lambda f: (f / "posterior.json").write_text('{"model": '), "not readable"),
    "json not utf-8": (lambda f: (f / "posterior.json").write_bytes(b"\xff\xfe{"), "not readable"),
    "json a list": (lambda f: (f / "posterior.json").write_text("[1, 2]"), "holds a JSON list"),
    "json newer schema": (
        edit_json("posterior.json", lambda m: m | {"schema_version": 2}),
        "schema version 2",
    ),
    "json unknown network": (
        edit_json("posterior.json", lambda m: m | {"model": {"name": "resnet"}}),
        "not one of the networks",
    ),
    "json other network than the arrays": (
        edit_json("posterior.json", lambda m: m | {"model": DenseSpec((7,)).to_dict()}),
        "not those of the dense network",
    ),
    "json seed a string": (
        edit_json("posterior.json", lambda m: m | {"seed": "x"}),
        "seed must be an integer",
    ),
    "posterior.npz missing": (lambda f: (f / "posterior.npz").unlink(), "posterior.npz not found"),
    "posterior.json missing": (
        lambda f: (f / "posterior.json").unlink(),
        "posterior.json not found",
    ),
}

FLAG_CASES = {
    "flag malformed": (lambda f: (f / "flag.json").write_text("{"), "not a valid flag rule"),
    "flag a number": (lambda f: (f / "flag.json").write_text("3"), "not a valid flag rule"),
    "flag unknown score": (
        edit_json("flag.json", lambda r: r | {"score": "magic"}),
        "score 'magic' is not one of",
    ),
    "flag NaN threshold": (
        lambda f: (f / "flag.json").write_text(
            (f / "flag.json").read_text().replace('"threshold": 0.023', '"threshold": NaN')
        ),
        "threshold nan",
    ),
    "flag.json missing": (lambda f: (f / "flag.json").unlink(), "flag.json not found"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_damaged_posterior_names_the_file_and_the_refit(tmp_path, case):
    damage, expected = MODEL_CASES[case]
    damage(save_model(tmp_path))
    with pytest.raises(DataError) as error:
        posterior.load(tmp_path)
    message = str(error.value)
    assert expected in message and FIT in message and str(tmp_path) in message
    assert "\n" not in message


@pytest.mark.parametrize("case", list(FLAG_CASES))
def test_a_damaged_flag_rule_names_the_file_and_the_refit(tmp_path, case):
    damage, expected = FLAG_CASES[case]
    damage(save_model(tmp_path))
    with pytest.raises(DataError) as error:
        flag_rule.load(tmp_path)
    assert expected in str(error.value) and FIT in str(error.value)
    assert str(tmp_path / "flag.json") in str(error.value)


def test_a_posterior_of_another_network_than_the_config_is_refused(paths, tmp_path):
    with pytest.raises(DataError, match="refit with `dvc repro -f fit_advi`") as error:
        run_ppc(paths, tmp_path, spec=DenseSpec((800, 800)))
    assert "posterior.json is a posterior of the network" in str(error.value)
    assert not paths.ppc.exists()  # nothing computed from it


# --- data/ppc ---------------------------------------------------------------------------------


def old_ppc_file(path: Path) -> None:
    """Rewrite a ppc file without its fingerprint, as the code before it wrote them."""
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files if k != artifacts.FINGERPRINT_KEY}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


PPC_CASES = {
    "from a refit posterior": (lambda p: refit(p), "computed from another posterior"),
    "test.npz truncated": (lambda p: truncate(p.ppc / "test.npz"), "test.npz is truncated"),
    "shift.npz zero bytes": (lambda p: (p.ppc / "shift.npz").write_bytes(b""), "shift.npz is"),
    "ood.npz without fingerprint": (
        lambda p: old_ppc_file(p.ppc / "ood.npz"),
        "does not say which posterior",
    ),
    "test.npz missing": (lambda p: (p.ppc / "test.npz").unlink(), "test.npz not found"),
    "test.npz of another file's summaries": (
        lambda p: (p.ppc / "test.npz").write_bytes((p.ppc / "ood.npz").read_bytes()),
        "lacks the summaries ['test']",
    ),
}


@pytest.mark.parametrize("case", list(PPC_CASES))
def test_evaluate_refuses_a_stale_or_damaged_ppc_file_and_writes_nothing(paths, tmp_path, case):
    run_ppc(paths, tmp_path)
    damage, expected = PPC_CASES[case]
    damage(paths)
    with pytest.raises(DataError) as error:
        evaluate(paths, uri(tmp_path))
    assert expected in str(error.value) and "dvc repro -f sample_ppc" in str(error.value)
    assert not paths.metrics.exists() and not (paths.ppc / "test_scores.npz").exists()


def test_plots_refuses_scores_of_another_posterior(paths, tmp_path):
    run_ppc(paths, tmp_path)
    evaluate(paths, uri(tmp_path))
    refit(paths)
    with pytest.raises(DataError, match=r"test_scores.npz was computed from another posterior"):
        load_scores(paths)
    truncate(paths.ppc / "test_scores.npz")
    with pytest.raises(DataError, match=r"truncated or corrupt.*`dvc repro -f evaluate`"):
        load_scores(paths)


def test_a_zip_member_cut_short_is_refused(paths, tmp_path):
    # A valid zip directory, but a member whose .npy data ends early.
    run_ppc(paths, tmp_path)
    path = paths.ppc / "test.npz"
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, value)
                if key == "test/mean_probabilities":
                    break
        archive.writestr("test/vote_counts.npy", b"\x93NUMPY\x01\x00")
    with pytest.raises(DataError, match="dvc repro -f sample_ppc"):
        evaluate(paths, uri(tmp_path))


# --- through the real command lines ----------------------------------------------------------


def run_cli(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"src/{script}.py", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def stage_args(root: Path) -> list[str]:
    return [
        *(f"paths.{name}={root / name}" for name in ("processed", "models", "ppc", "metrics")),
        f"paths.plots={root / 'plots'}",
        f"mlflow.tracking_uri={uri(root)}",
        f"hydra.run.dir={root / 'hydra'}",
        # Within the 12 test images, so that the checks against the data pass.
        "shift.images=12",
        "ood.images=12",
    ]


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "case",
    ["npz truncated", "npz empty archive", "json malformed", "json newer schema", "flag malformed"],
)
def test_predict_cli_refuses_a_damaged_model_folder(tmp_path, case):
    models = save_model(tmp_path / "models")
    (MODEL_CASES | FLAG_CASES)[case][0](models)
    images = tmp_path / "digits.npy"
    np.save(images, np.zeros((2, 28, 28), np.uint8))
    result = run_cli("predict", "--images", str(images), "--model", str(models))
    assert_one_line_exit_2(result, "error: ", str(models), FIT)
    assert result.stdout == ""  # no partial table


def test_sample_ppc_cli_refuses_a_truncated_posterior(paths, tmp_path):
    truncate(paths.models / "posterior.npz")
    result = run_cli("sample_ppc", *stage_args(tmp_path))
    assert_one_line_exit_2(result, "posterior.npz is truncated or corrupt", FIT)
    assert not paths.ppc.exists()


def test_evaluate_cli_refuses_ppc_files_of_another_posterior(paths, tmp_path):
    run_ppc(paths, tmp_path)
    refit(paths)
    result = run_cli("evaluate", *stage_args(tmp_path))
    assert_one_line_exit_2(result, "computed from another posterior", "dvc repro -f sample_ppc")
    assert not paths.metrics.exists()


def test_plots_cli_refuses_scores_of_another_posterior(paths, tmp_path):
    run_ppc(paths, tmp_path)
    evaluate(paths, uri(tmp_path))
    tables.write_table(paths.metrics / "elbo.tsv", ["step", "elbo"], [(1, -3.0), (2, -2.0)])
    refit(paths)
    result = run_cli("plots", *stage_args(tmp_path))
    assert_one_line_exit_2(result, "test_scores.npz", "dvc repro -f evaluate")
    assert not paths.plots.exists()
