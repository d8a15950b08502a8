"""params.yaml is generated from conf/, never edited by hand.

``dvc exp run`` composes conf/ into params.yaml itself (DVC's Hydra
composition); plain ``dvc repro`` reads params.yaml as it is. Both must see
the same values, so this module composes with DVC's own function and a test
fails when the committed params.yaml has drifted from conf/.

Run ``python -m bnn.pipeline.params_file`` (``make params``) after editing conf/.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml
from dvc.utils.hydra import compose_and_dump

CONFIG_NAME = "config"


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


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path.cwd()
    (root / "params.yaml").write_text(compose_params(root / "conf"), encoding="utf-8")
    print(f"wrote {root / 'params.yaml'} from {root / 'conf'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
