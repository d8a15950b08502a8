"""After a failed workspace `dvc exp run -S`, params.yaml is conf/'s composition again."""

import shutil
from pathlib import Path

import pytest

from bnn.pipeline.params_file import FAILED_COPY, compose_params, in_sync, put_back_params

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    (tmp_path / "params.yaml").write_text(
        compose_params(tmp_path / "conf", ["inference.n_iter=-1"])
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def test_a_failed_experiment_puts_params_back_and_keeps_the_failed_copy(workspace, monkeypatch):
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    assert "put back" in put_back_params()
    assert in_sync(workspace / "conf", workspace / "params.yaml")
    assert "n_iter: -1" in (workspace / FAILED_COPY).read_text()
    assert put_back_params() is None  # nothing left to put back


def test_outside_an_experiment_params_yaml_is_left_alone(workspace, monkeypatch):
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    before = (workspace / "params.yaml").read_text()
    assert put_back_params() is None
    assert (workspace / "params.yaml").read_text() == before


def test_a_queued_experiment_in_a_temporary_copy_is_left_alone(workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # DVC runs queued experiments in a copy of the repository
    assert put_back_params() is None
