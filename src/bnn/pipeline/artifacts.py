"""Which posterior a stage's output came from, so that a stale file cannot mislead.

``sample_ppc`` stores the :func:`~bnn.predictive.posterior.fingerprint` of the
posterior it drew from in each ``data/ppc/*.npz``; ``evaluate`` refuses a file
whose fingerprint is not that of ``models/`` now, and copies it into
``ppc/test_scores.npz``, which ``plots`` checks the same way. A refit, a
restored old model folder, or a ppc file copied from another run then stops
with the command that rebuilds the stale file, instead of scoring one
posterior's predictive against another's run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnn.core.errors import DataError
from bnn.predictive import chunked, ensemble
from bnn.predictive.chunked import PredictiveSummary

FINGERPRINT_KEY = "posterior_sha256"
SAMPLE_PPC = "dvc repro -f sample_ppc"
EVALUATE = "dvc repro -f evaluate"


def stamp(models: Path) -> dict[str, np.ndarray]:
    """The extra array to save beside a stage's output: ``{FINGERPRINT_KEY: sha256}``."""
    return {FINGERPRINT_KEY: np.array(ensemble.model_fingerprint(models))}


def check_stamp(path: Path, arrays, models: Path, rebuild: str) -> None:
    """Refuse ``path`` unless its stored fingerprint is that of the posterior in ``models``.

    Raises
    ------
    DataError
        If the fingerprint is missing (a file written before fingerprints) or
        differs; the message names the file and ``rebuild``.
    """
    stored = arrays[FINGERPRINT_KEY] if FINGERPRINT_KEY in arrays else None
    if stored is None or stored.shape != () or stored.dtype.kind != "U":
        raise DataError(
            f"{path} does not say which posterior it came from (written by an older "
            f"version, or damaged); rebuild it with `{rebuild}`"
        )
    current = ensemble.model_fingerprint(models)
    if str(stored) != current:
        raise DataError(
            f"{path} was computed from another posterior than {models} holds now "
            f"(sha256 {str(stored)[:12]} vs {current[:12]}); rebuild it with `{rebuild}`"
        )


def load_ppc(
    path: Path, models: Path, names: tuple[str, ...] = (), labels: bool = False
) -> tuple[dict[str, PredictiveSummary], dict[str, np.ndarray]]:
    """A ``sample_ppc`` output, checked against ``models``; ``names`` must be among its summaries.

    With ``labels``, the file must hold one label per image of every summary.

    Raises
    ------
    DataError
        If the file is missing, corrupt, from another posterior, or lacks what
        ``evaluate`` needs.
    """
    summaries, extra = chunked.load(path, rebuild=SAMPLE_PPC)
    check_stamp(path, extra, models, SAMPLE_PPC)
    missing = [name for name in names if name not in summaries]
    if missing or not summaries:
        raise DataError(
            f"{path} lacks the summaries {missing or 'of any set'}; rebuild it with `{SAMPLE_PPC}`"
        )
    if labels:
        found = extra.get("labels")
        if found is None or any(found.shape != (len(s),) for s in summaries.values()):
            raise DataError(
                f"{path}: no labels, or not one per image; rebuild it with `{SAMPLE_PPC}`"
            )
    return summaries, extra
