"""The package's architecture, checked: imports run one way, and the light modules stay light."""

from __future__ import annotations

import subprocess
import sys

from helpers_imports import SRC, imported_names

# Bottom to top. A subpackage may import its own layer's modules and any lower layer.
LAYERS = (
    ("core",),
    ("data", "model"),
    ("predictive",),
    ("evaluation",),
    ("inference",),
    ("serving", "reporting"),
    ("pipeline",),
)
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LEVEL else None


def test_every_subpackage_is_in_a_layer_and_says_what_it_owns():
    found = {p.name for p in (SRC / "bnn").iterdir() if (p / "__init__.py").is_file()}
    assert found == set(LEVEL)
    for package in found:
        doc = (SRC / "bnn" / package / "__init__.py").read_text()
        assert "Owns:" in doc and "Imports" in doc, package


def test_imports_run_one_way():
    upward = []
    for path in sorted((SRC / "bnn").rglob("*.py")):
        here = path.relative_to(SRC / "bnn").parts
        if len(here) < 2:
            continue
        for name in imported_names(path):
            there = package_of(name)
            if there is not None and LEVEL[there] > LEVEL[here[0]]:
                upward.append(f"bnn/{'/'.join(here)} imports {name}")
            elif there is not None and there != here[0] and LEVEL[there] == LEVEL[here[0]]:
                upward.append(f"bnn/{'/'.join(here)} imports {name} (same layer)")
    assert not upward, "\n".join(upward)


def heavy_modules_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\n"
        "heavy = ('pymc', 'pytensor', 'mlflow', 'matplotlib', 'numba', 'scipy', 'pandas')\n"
        "print('LOADED:' + ' '.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=SRC.parent
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("LOADED:")]
    return line.removeprefix("LOADED:").split()


def test_specs_and_the_data_layer_import_neither_pymc_nor_pytensor():
    loaded = heavy_modules_after(
        "import bnn.model.specs, bnn.model.weights, bnn.data.dataset, bnn.data.fetch"
    )
    assert not {"pymc", "pytensor", "mlflow", "numba"} & set(loaded)


def test_serving_a_posterior_needs_no_pymc():
    loaded = heavy_modules_after(
        "import bnn.predictive.posterior, bnn.serving.predict_table, bnn.serving.flag_rule, "
        "bnn.serving.image_input"
    )
    assert not {"pymc", "pytensor", "mlflow", "numba"} & set(loaded)


def test_predict_help_loads_no_numerical_library():
    loaded = heavy_modules_after(
        "import runpy, sys\nsys.argv = ['predict', '--help']\n"
        "try:\n    runpy.run_path('src/predict.py', run_name='__main__')\n"
        "except SystemExit:\n    pass"
    )
    assert loaded == []
