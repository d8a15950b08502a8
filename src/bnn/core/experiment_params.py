"""Putting ``params.yaml`` back after a ``dvc exp run -S ...`` that failed.

``dvc exp run -S key=value`` writes the value into the workspace's ``params.yaml``
before it runs the stages, and leaves it there when a stage fails, so a typo
stays in the file the next ``dvc repro`` reads. A stage that stops with a user
error or an interrupt calls :func:`put_back_params`, which restores the file as
it was at the experiment's baseline commit and keeps the failed one beside the
DVC temporary files, so nothing is lost.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bnn.core.atomic import atomic_path

PARAMS_FILE = "params.yaml"
FAILED_COPY = Path(".dvc/tmp/params.failed.yaml")


def put_back_params() -> str | None:
    """Restore ``params.yaml`` from the baseline of the failed workspace experiment.

    Does nothing (returns ``None``) outside ``dvc exp run``, in a queued or
    ``--temp`` experiment (whose copy of the repository DVC discards), or when
    the file already matches the baseline. Returns the line to tell the user.
    """
    baseline, root = os.environ.get("DVC_EXP_BASELINE_REV"), os.environ.get("DVC_ROOT")
    if not baseline or not root or Path.cwd().resolve() != Path(root).resolve():
        return None
    path = Path(root) / PARAMS_FILE
    original = subprocess.run(
        ["git", "show", f"{baseline}:{PARAMS_FILE}"], cwd=root, capture_output=True
    )
    if original.returncode != 0 or not path.is_file() or path.read_bytes() == original.stdout:
        return None
    failed = Path(root) / FAILED_COPY
    failed.parent.mkdir(parents=True, exist_ok=True)
    failed.write_bytes(path.read_bytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(original.stdout)
    return (
        f"{PARAMS_FILE} put back as at the experiment's baseline {baseline[:7]}; "
        f"the failed values are in {FAILED_COPY}"
    )
