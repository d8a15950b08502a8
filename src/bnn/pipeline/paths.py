"""Where each stage reads and writes: ``paths`` in ``conf/config.yaml``, as one value."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes (``paths`` in conf/config.yaml)."""

    raw: Path
    processed: Path
    models: Path
    ppc: Path
    metrics: Path
    plots: Path

    @classmethod
    def from_mapping(cls, values) -> Paths:
        return cls(**{f.name: Path(values[f.name]) for f in fields(cls)})

    def outputs_under(self, root: Path) -> Paths:
        """The same layout with every output folder moved under ``root``; inputs stay."""
        return replace(
            self,
            **{name: root / getattr(self, name) for name in ("models", "ppc", "metrics", "plots")},
        )
