"""The ``sample_ppc`` stage: the posterior predictive of the test set, rotations and OOD sets."""

from __future__ import annotations

import time

import numpy as np

from bnn.data import shifted_inputs
from bnn.data.dataset import load_split
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
    ``ppc/ood.npz`` (one per set). Each set draws from its own seeded stream,
    so changing one leaves the others' numbers alone. Each file records the
    fingerprint of the posterior it came from (:mod:`bnn.pipeline.artifacts`).
    Given the config's ``spec``, a posterior of another network is refused
    before any draw. An ensemble's folder gives the mixture's predictive.
    """
    fitted, test = ensemble.load_model(paths.models), load_split(paths.processed, "test")
    if spec is not None:
        posterior.check_network(fitted.meta, spec, paths.models)
    stamp = artifacts.stamp(paths.models)
    test_seed, shift_seed, ood_seed = np.random.SeedSequence(seed).spawn(3)

    def summarise(images, n_draws, stream, label, transient=True):
        rng = np.random.default_rng(stream)
        return chunked.summarise_predictive(
            fitted, images, n_draws, rng, chunk_draws, chunk_images, label, transient
        )

    began = time.perf_counter()
    summary = summarise(test.images, draws, test_seed, "test set", transient=False)
    seconds = time.perf_counter() - began
    chunked.save(paths.ppc / "test.npz", {"test": summary}, labels=test.labels, **stamp)

    subset = test.subset(slice(0, shift["images"]))
    streams = shift_seed.spawn(len(shift["angles"]))
    rotated = {
        f"{angle:g}": summarise(
            shifted_inputs.rotate(subset.images, angle),
            shift["draws"],
            stream,
            f"rotated {angle:g}°",
        )
        for angle, stream in zip(shift["angles"], streams, strict=True)
    }
    chunked.save(paths.ppc / "shift.npz", rotated, labels=subset.labels, **stamp)

    digits = test.images[: ood["images"]]
    streams = ood_seed.spawn(len(ood["sets"]))
    ood_summaries = {}
    for name, stream in zip(ood["sets"], streams, strict=True):
        made, draw_stream = stream.spawn(2)
        images = shifted_inputs.ood_images(name, digits, np.random.default_rng(made))
        ood_summaries[name] = summarise(images, ood["draws"], draw_stream, f"OOD {name}")
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
