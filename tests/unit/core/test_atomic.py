"""A disk that fills during a write: the old file stays, no .part is left, one line says so.

Two real ways to fill it: a 256 KiB tmpfs mounted in a private mount namespace
(``unshare -rm``; skipped where user namespaces are off), and the file-size
limit ``RLIMIT_FSIZE``, which makes a write past N bytes fail with EFBIG once
SIGXFSZ is ignored. Both go through the real writers in a subprocess.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers_posterior import save_model

ROOT = Path(__file__).resolve().parents[3]
OLD = "the previous, good file\n"


def limit_file_size(n_bytes: int):
    """A ``preexec_fn``: writes past ``n_bytes`` fail with EFBIG instead of killing the process."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return apply


def assert_disk_full_line(result: subprocess.CompletedProcess, path: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: the write failed, the disk is full")
    assert "the previous file was kept unchanged" in line


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


WRITERS = {
    # What each writer puts in a file far larger than the limit.
    "text": "from bnn.core.atomic import write_text as w; write = lambda p: w(p, 'x' * 200_000)",
    "json": "from bnn.core.tables import write_json as w; "
    "write = lambda p: w(p, {str(i): i for i in range(20_000)})",
    "npz": "import numpy as np; from bnn.predictive.chunked import save as s, PredictiveSummary; "
    "n = 5000; write = lambda p: s(p, {'t': PredictiveSummary(np.zeros((n, 10)), np.zeros(n), "
    "np.zeros((n, 10), int), np.zeros((n, 10), int), 1)})",
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_file_size_limit_keeps_the_old_file(tmp_path, writer):
    target = tmp_path / "out.file"
    target.write_text(OLD)
    code = f"""
        import sys
        from bnn.core.cli import user_errors_exit
        {WRITERS[writer]}
        user_errors_exit(write)(sys.argv[1])
    """
    result = run_with_file_limit(["-c", textwrap.dedent(code), str(target)], 50_000)
    assert_disk_full_line(result, target)
    assert target.read_text() == OLD
    assert leftovers(tmp_path) == []


def run_with_file_limit(args: list[str], max_bytes: int) -> subprocess.CompletedProcess:
    """``python *args`` in the repository, unable to write files beyond ``max_bytes``."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=limit_file_size(max_bytes),
        cwd=ROOT,
    )


def test_predict_cli_on_a_full_disk_keeps_the_old_csv(tmp_path):
    models = save_model(tmp_path / "models")
    images = tmp_path / "digits.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8))
    out = tmp_path / "predictions.csv"
    out.write_text(OLD)
    command = ["src/predict.py", "--images", str(images), "--model", str(models), "--out", str(out)]
    result = run_with_file_limit([*command, "--draws", "3"], 4_000)
    assert_disk_full_line(result, out)
    assert out.read_text() == OLD
    assert leftovers(tmp_path) == []


TMPFS_CHILD = """
    import json, subprocess, sys
    from pathlib import Path
    folder = Path(sys.argv[1])
    target = folder / "metrics.json"
    target.write_text(OLD)
    writer = (
        "import sys; from bnn.core.cli import user_errors_exit; "
        "from bnn.core.tables import write_json; "
        "user_errors_exit(write_json)(sys.argv[1], {str(i): 'x' * 50 for i in range(20_000)})"
    )
    result = subprocess.run([sys.executable, "-c", writer, str(target)], capture_output=True,
                            text=True)
    files = sorted(p.name for p in folder.iterdir())
    print(json.dumps({"rc": result.returncode, "stderr": result.stderr,
                      "old": target.read_text(), "files": files}))
"""


def test_a_real_full_file_system_keeps_the_old_file(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    child = textwrap.dedent(TMPFS_CHILD).replace("OLD", repr(OLD))
    script = 'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    result = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, "sh", str(mount_point), sys.executable, child],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"},
        cwd=ROOT,
    )
    if result.returncode != 0 and "mount" in result.stderr + result.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    report = json.loads(result.stdout)
    assert report["rc"] == 2, report
    assert "Traceback" not in report["stderr"]
    (line,) = report["stderr"].strip().splitlines()
    assert "the disk is full (No space left on device)" in line
    assert "metrics.json" in line and "the previous file was kept unchanged" in line
    assert report["old"] == OLD
    assert report["files"] == ["metrics.json"]  # no .part left behind
