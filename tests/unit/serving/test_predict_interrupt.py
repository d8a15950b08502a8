"""Ctrl-C or a kill during a long predict: one line, exit 130/143, the old --out kept."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_posterior import save_model

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_predict_keeps_the_previous_table(tmp_path, signum):
    models = save_model(tmp_path / "models")
    images = tmp_path / "digits.npy"
    np.save(images, np.random.default_rng(0).integers(0, 255, (40, 28, 28), dtype=np.uint8))
    out = tmp_path / "predictions.csv"
    out.write_text("the previous table\n")
    command = [sys.executable, "src/predict.py", "--images", str(images), "--model", str(models)]
    process = subprocess.Popen(
        [*command, "--draws", "100000000", "--out", str(out)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    # predict estimates a long run up front, in one line, once its first draws are timed.
    first_line = process.stderr.readline()
    assert first_line.startswith("predict: 100000000 draws of 40 images will take about")
    process.send_signal(signum)
    rest = process.stderr.read()
    process.wait(timeout=60)
    process.stderr.close()
    assert process.returncode == 128 + signum
    assert rest.strip().splitlines()[-1] == f"interrupted: {signal.Signals(signum).name}"
    assert "Traceback" not in rest
    assert out.read_text() == "the previous table\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
