"""The ``sample_ppc`` stage: the posterior predictive of the test set, rotations and OOD sets."""

from __future__ import annotations

import time

import numpy as np

from bnn.data.dataset import load_split
from bnn.data.evaluation_sets import PredictiveSet, evaluation_sets
from bnn.pipeline import artifacts, tracking
from bnn.pipeline.paths import Paths
from bnn.predictive import chunked, ensemble, posterior


def sample_ppc(
    paths: Paths,
    draws: int,
    chunk_draws: int,
    chunk_images: int,
    seed: int,
    uri: str,
    shift: dict,
    ood: dict,
    spec=None,
) -> float:
    """Posterior predictive of the test set, its rotations and the OOD sets; returns seconds.

    Writes ``ppc/test.npz``, ``ppc/shift.npz`` (one summary per angle) and
    ``ppc/ood.npz`` (one per set), the sets of
    :func:`bnn.data.evaluation_sets.evaluation_sets`. Each file records the
    fingerprint of the posterior it came from (:mod:`bnn.pipeline.artifacts`).
    Given the config's ``spec``, a posterior of another network is refused
    before any draw. An ensemble's folder gives the mixture's predictive.
    """
    fitted, test = ensemble.load_model(paths.models), load_split(paths.processed, "test")
    if spec is not None:
        posterior.check_network(fitted.meta, spec, paths.models)
    stamp = artifacts.stamp(paths.models)
    sets = evaluation_sets(test, draws, shift, ood, seed)

    def summarise(predictive_set: PredictiveSet, transient=True):
        return chunked.summarise_predictive(
            fitted,
            predictive_set.images,
            predictive_set.draws,
            np.random.default_rng(predictive_set.stream),
            chunk_draws,
            chunk_images,
            predictive_set.label,
            transient,
        )

    began = time.perf_counter()
    summary = summarise(sets.test, transient=False)
    seconds = time.perf_counter() - began
    chunked.save(paths.ppc / "test.npz", {"test": summary}, labels=sets.test_labels, **stamp)
    rotated = {name: summarise(one) for name, one in sets.shift.items()}
    chunked.save(paths.ppc / "shift.npz", rotated, labels=sets.shift_labels, **stamp)
    ood_summaries = {name: summarise(one) for name, one in sets.ood.items()}
    chunked.save(paths.ppc / "ood.npz", ood_summaries, **stamp)

    with tracking.resumed_run(uri, fitted.meta.mlflow_run_id) as active:
        if active:
            tracking.log_metrics({"ppc_seconds": seconds, "ppc_draws": draws})
    print(
        f"sample_ppc: {draws} draws x {len(test)} test images in {seconds:.1f} s; "
        f"{len(shift['angles'])} rotations and {len(ood['sets'])} OOD sets of "
        f"{shift['images']}/{ood['images']} images"
    )
    return seconds
