"""The whole chain in one process, as a sweep job runs it: the same stage functions DVC runs."""

from __future__ import annotations

from bnn.pipeline.evaluate_stage import evaluate
from bnn.pipeline.fit_stage import fit
from bnn.pipeline.paths import Paths
from bnn.pipeline.plots_stage import plot
from bnn.pipeline.ppc_stage import sample_ppc


def run_all(paths: Paths, fit_kwargs: dict, predictive_kwargs: dict, seed: int, uri: str) -> dict:
    """Fit, posterior predictive, evaluation and plots in one process (a sweep job).

    ``predictive_kwargs`` are :func:`sample_ppc`'s settings: the draws and
    chunks, and the ``shift`` and ``ood`` settings.
    """
    fit(paths, seed=seed, uri=uri, **fit_kwargs)
    sample_ppc(paths, seed=seed, uri=uri, **predictive_kwargs)
    scores = evaluate(paths, uri)
    plot(paths, uri, seed)
    return scores
