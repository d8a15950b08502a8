"""params.yaml is generated from conf/, never edited by hand.

``dvc exp run`` composes conf/ into params.yaml itself (DVC's Hydra
composition); plain ``dvc repro`` reads params.yaml as it is. Both must see
the same values, so this module composes with DVC's own function and a test
fails when the committed params.yaml has drifted from conf/.

Run ``python -m bnn.pipeline.params_file`` (``make params``) after editing conf/.

``dvc exp run -S key=value`` composes conf/ with the override into params.yaml
and leaves it there when a stage fails, so a typo would stay in the file the
next ``dvc repro`` reads: the stages call :func:`put_back_params` when they stop
with a user error or an interrupt.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import yaml
from dvc.utils.hydra import compose_and_dump
from hydra.core.global_hydra import GlobalHydra

from bnn.core.atomic import write_text

CONFIG_NAME = "config"
FAILED_COPY = Path(".dvc/tmp/params.failed.yaml")


def compose_params(conf_dir: str | Path, overrides: list[str] | None = None) -> str:
    """The YAML text DVC would write to params.yaml for ``conf_dir`` and ``overrides``."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "params.yaml"
        compose_and_dump(
            output, str(Path(conf_dir).resolve()), None, CONFIG_NAME, folder, overrides or []
        )
        return output.read_text(encoding="utf-8")


def in_sync(conf_dir: str | Path, params_path: str | Path) -> bool:
    """Whether ``params_path`` holds the same values as the composition of ``conf_dir``."""
    composed = yaml.safe_load(compose_params(conf_dir))
    return composed == yaml.safe_load(Path(params_path).read_text(encoding="utf-8"))


def put_back_params() -> str | None:
    """After a failed workspace ``dvc exp run``, make params.yaml conf/'s composition again.

    That is the file as it was before the run (with DVC's Hydra composition on,
    ``dvc exp run`` writes params.yaml from conf/ plus the overrides). The failed
    file is kept in :data:`FAILED_COPY`. Does nothing, and returns ``None``,
    outside ``dvc exp run``, in a queued or ``--temp`` experiment (a copy DVC
    discards), or when params.yaml already matches conf/; else returns the line
    to tell the user.
    """
    root = os.environ.get("DVC_ROOT")
    if not os.environ.get("DVC_EXP_BASELINE_REV") or not root:
        return None
    root = Path(root)
    params = root / "params.yaml"
    if Path.cwd().resolve() != root.resolve() or not params.is_file():
        return None
    composed = outside_the_running_app(compose_params, root / "conf")
    if yaml.safe_load(composed) == yaml.safe_load(params.read_text(encoding="utf-8")):
        return None
    (root / FAILED_COPY).parent.mkdir(parents=True, exist_ok=True)
    write_text(root / FAILED_COPY, params.read_text(encoding="utf-8"))
    write_text(params, composed)
    return f"params.yaml put back to conf/'s values; the failed ones are in {FAILED_COPY}"


def outside_the_running_app(function, *args):
    """Call ``function`` while the running Hydra app (a stage's) steps aside.

    Hydra allows one initialised instance per process, and composing needs its own.
    """
    instance = GlobalHydra.instance()
    running = instance.hydra
    instance.clear()
    try:
        return function(*args)
    finally:
        instance.clear()
        instance.hydra = running


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    (root / "params.yaml").write_text(compose_params(root / "conf"), encoding="utf-8")
    print(f"wrote {root / 'params.yaml'} from {root / 'conf'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
