"""A tiny copy of the project for end-to-end runs: 16-unit nets, a few dozen steps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bnn.pipeline.params_file import compose_params

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model/dense.yaml": {"n_hidden": [16]},
    "model/conv.yaml": {"n_filters": [2, 3], "n_hidden": [8]},
    "inference/advi.yaml": {
        "n_iter": 80,
        "batch_size": 32,
        "elbo_log_points": 40,
        "validate_every": 20,
    },
    "config.yaml": {
        "predictive": {"draws": 12, "chunk_draws": 5, "chunk_images": 17},
        "shift": {"angles": [0, 90, 180], "images": 20, "draws": 4},
        "ood": {"images": 15, "draws": 4},
    },
}


def edit_yaml(path: Path, updates: dict) -> None:
    values = yaml.safe_load(path.read_text())
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key].update(value)
        else:
            values[key] = value
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def make_project(folder: Path, mirror) -> tuple[Path, dict]:
    """A copy of the project with tiny settings and the local mirror as its data source."""
    server, md5s = mirror
    project = folder / "project"
    project.mkdir()
    for name in ("src", "conf"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", project)
    data = yaml.safe_load((project / "conf/data/mnist.yaml").read_text())
    for spec in data["files"].values():
        spec["md5"] = md5s[spec["name"]]
    data["sources"] = [
        {"kind": "mirror", "name": "dead", "url": "http://127.0.0.1:9/mnist/"},
        {"kind": "mirror", "name": "local", "url": f"{server.url}/mnist/"},
    ]
    data["validation_size"] = 50
    (project / "conf/data/mnist.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    for name, updates in TINY.items():
        edit_yaml(project / "conf" / name, updates)
    (project / "params.yaml").write_text(compose_params(project / "conf"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env |= {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
    }
    return project, env
