"""The sets a predictive is evaluated on: the test set, its rotations, the OOD sets.

Each set comes with the number of draws and a seed stream of its own
(``SeedSequence(seed).spawn``), so changing one set leaves the others' numbers
alone, and ``sample_ppc`` and the ensembles' comparison draw the same images
from the same streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnn.data import shifted_inputs
from bnn.data.dataset import LabelledImages


@dataclass(frozen=True)
class PredictiveSet:
    """Images to draw the predictive of, how many draws, and the seed stream of the draws."""

    label: str
    images: np.ndarray
    draws: int
    stream: np.random.SeedSequence


@dataclass(frozen=True)
class EvaluationSets:
    """The test set, its rotations by angle name and the OOD sets by name, with labels."""

    test: PredictiveSet
    test_labels: np.ndarray
    shift: dict[str, PredictiveSet]
    shift_labels: np.ndarray
    ood: dict[str, PredictiveSet]


def evaluation_sets(
    test: LabelledImages, draws: int, shift: dict, ood: dict, seed: int
) -> EvaluationSets:
    """Every set ``sample_ppc`` draws the predictive of, each with a seeded stream of its own.

    Each set draws from its own stream, so changing one leaves the others'
    numbers alone; the OOD images are made from a stream of their own too.
    """
    test_seed, shift_seed, ood_seed = np.random.SeedSequence(seed).spawn(3)
    subset = test.subset(slice(0, shift["images"]))
    rotated = {
        f"{angle:g}": PredictiveSet(
            f"rotated {angle:g}°",
            shifted_inputs.rotate(subset.images, angle),
            shift["draws"],
            stream,
        )
        for angle, stream in zip(
            shift["angles"], shift_seed.spawn(len(shift["angles"])), strict=True
        )
    }
    digits = test.images[: ood["images"]]
    ood_sets = {}
    for name, stream in zip(ood["sets"], ood_seed.spawn(len(ood["sets"])), strict=True):
        made, draw_stream = stream.spawn(2)
        images = shifted_inputs.ood_images(name, digits, np.random.default_rng(made))
        ood_sets[name] = PredictiveSet(f"OOD {name}", images, ood["draws"], draw_stream)
    return EvaluationSets(
        test=PredictiveSet("test set", test.images, draws, test_seed),
        test_labels=test.labels,
        shift=rotated,
        shift_labels=subset.labels,
        ood=ood_sets,
    )
