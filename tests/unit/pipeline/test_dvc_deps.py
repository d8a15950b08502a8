"""DVC tracks the code: every stage depends on the bnn folders its script imports."""

from __future__ import annotations

import pytest
import yaml

from helpers_imports import ROOT, SRC, closure

STAGE_SCRIPTS = {
    "fetch": "fetch",
    "preprocess": "preprocess",
    "fit_advi": "fit",
    "sample_ppc": "sample_ppc",
    "evaluate": "evaluate",
    "plots": "plots",
}


# The ensembles' pipeline runs the same scripts from the repository root (wdir: ..).
ENSEMBLE_STAGE_SCRIPTS = {
    "fit_members": "fit",
    "sample_ppc": "sample_ppc",
    "evaluate": "evaluate",
}
PIPELINES = {"dvc.yaml": STAGE_SCRIPTS, "ensembles/dvc.yaml": ENSEMBLE_STAGE_SCRIPTS}


def stage_deps(pipeline: str = "dvc.yaml") -> dict[str, list[str]]:
    stages = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
    return {name: stage["deps"] for name, stage in stages.items()}


def covered(file, deps: list[str]) -> bool:
    relative = file.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_has_a_script_whose_imports_its_deps_cover(pipeline):
    deps = stage_deps(pipeline)
    assert set(deps) == set(PIPELINES[pipeline])
    for stage, script in PIPELINES[pipeline].items():
        script_path = SRC / f"{script}.py"
        assert f"src/{script}.py" in deps[stage]
        missing = sorted(
            f.relative_to(ROOT).as_posix()
            for f in closure(script_path)
            if not covered(f, deps[stage])
        )
        assert not missing, f"stage {stage} imports modules its deps miss: {missing}"


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_code_deps_are_whole_folders_not_hand_lists(pipeline):
    for stage, deps in stage_deps(pipeline).items():
        modules = [d for d in deps if d.startswith("src/bnn/") and d.endswith(".py")]
        assert modules == ["src/bnn/__init__.py"], f"{stage} lists single modules: {modules}"


def test_the_closure_sees_imports_inside_functions():
    # fit.py imports the library inside main(); the closure must still find it.
    files = {f.relative_to(SRC).as_posix() for f in closure(SRC / "fit.py")}
    assert "bnn/inference/fused.py" in files and "bnn/pipeline/fit_stage.py" in files
    assert "bnn/pipeline/chain.py" in files
