"""``benchmarks.time_to_accuracy``: ours and NumPyro's fits, clocked to a validation accuracy.

Real fits of a tiny network on tiny synthetic splits, each fitter in its own
process as the benchmark runs them. NumPyro is the benchmark group (``make bench-env``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnn.data.dataset import LabelledImages, save_split
from helpers_mnist import synthetic_mnist

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.n_hidden=[8]", "inference.batch_size=20", "inference.validate_every=3"]


def write_splits(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = synthetic_mnist(60, 30, seed=5)
    scaled = lambda key: arrays[key] / np.float32(255)  # noqa: E731
    save_split(LabelledImages(scaled("train_images"), arrays["train_labels"]), folder / "train.npz")
    save_split(LabelledImages(scaled("test_images"), arrays["test_labels"]), folder / "valid.npz")
    return folder


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)


def without_numpyro(folder: Path) -> dict:
    """An environment whose Pythons cannot import NumPyro, as without `make bench-env`."""
    folder.mkdir()
    # find_spec answers None for a name that sys.modules maps to None
    (folder / "sitecustomize.py").write_text("import sys\nsys.modules['numpyro'] = None\n")
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def test_both_fitters_stop_at_their_first_check_on_target(tmp_path):
    data, out = write_splits(tmp_path), tmp_path / "dense.json"
    args = ["dense", *TINY, "inference.n_iter=9", "--target", "0", "--data", str(data)]
    done = run(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == summary
    for fitter in ("ours", "numpyro"):
        result = summary[fitter]
        # any accuracy reaches 0: the fit stops at step 3, the first check
        assert result["steps"] == 3 and len(result["curve"]) == 1
        # the curve keeps seconds to 0.1
        assert result["seconds_to_target"] == pytest.approx(result["curve"][0][1], abs=0.05)
        assert result["seconds_to_target"] > 0
        assert 0 <= result["curve"][0][2] <= 1


def test_a_target_not_reached_runs_every_step_and_says_so(tmp_path):
    data, env = write_splits(tmp_path / "data"), without_numpyro(tmp_path / "site")
    args = ["dense", *TINY, "inference.n_iter=6", "--target", "1.01", "--data", str(data)]
    refused = run(*args, "--fitters", "numpyro", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: NumPyro is not installed; `make bench-env` adds the benchmark group"
    )
    done = run(*args, "--fitters", "ours", env=env)  # our fit alone needs no NumPyro
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not reached (6 steps)" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])["ours"]
    assert result["seconds_to_target"] is None
    assert [step for step, _, _ in result["curve"]] == [3, 6]


def test_missing_splits_are_one_clear_error(tmp_path):
    done = run("dense", "--data", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {tmp_path / 'train.npz'} not found; run the preprocess stage "
        "(`dvc repro preprocess`)"
    )
