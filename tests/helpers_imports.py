"""Which ``bnn`` modules a script or module imports, read from the source (imports inside
functions included, so a stage's lazy imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    """The file of module ``bnn.x.y`` under src/, or None if it is not one of ours."""
    path = SRC.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_names(path: Path) -> set[str]:
    """Every ``bnn`` module named by an import statement in ``path``, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "bnn"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "bnn":
                continue
            names.add(node.module)
            # `from bnn.pkg import module` imports a module, not a name.
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if module_file(name) is not None}


def closure(path: Path) -> set[Path]:
    """Files of every ``bnn`` module ``path`` imports, directly or not, with their packages."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        for name in imported_names(current):
            parts = name.split(".")
            # Importing bnn.a.b runs bnn/__init__.py and bnn/a/__init__.py first.
            for depth in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:depth]))
                if file is not None and file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen
