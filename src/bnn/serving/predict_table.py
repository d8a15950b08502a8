"""The table ``predict`` prints: one row per image, with its uncertainty and flag.

Columns, in order (:data:`COLUMNS`):

``index``, ``source``
    Row number from 0, and where the image came from.
``predicted``, ``confidence``
    The argmax of the predictive distribution, and its probability.
``p0`` ... ``p9``
    The predictive distribution: the mean of the draws' class probabilities.
``entropy``
    Predictive entropy in nats (total uncertainty).
``mutual_info``
    Mutual information between label and weights in nats (epistemic
    uncertainty); 0 for a point estimate.
``chi2``
    The 2016 experiment's chi-square statistic of the labels sampled once per
    draw against uniform; large when the draws agree.
``flag``
    True when the saved :class:`~bnn.serving.flag_rule.FlagRule` says to check the
    prediction by hand.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd

from bnn.core.atomic import atomic_path
from bnn.core.errors import DataError, DiskFullError
from bnn.core.mnist import N_CLASSES
from bnn.core.progress import duration
from bnn.evaluation.metrics import chisquare_statistics
from bnn.evaluation.scoring import scores_of
from bnn.predictive.chunked import summarise_predictive
from bnn.predictive.ensemble import Ensemble
from bnn.predictive.posterior import Posterior
from bnn.serving.flag_rule import FlagRule

# A predict that will run longer than this says so, with its estimate, before the bar.
LONG_RUN_SECONDS = 30.0
PROBABILITY_COLUMNS = [f"p{k}" for k in range(N_CLASSES)]
COLUMNS = [
    "index",
    "source",
    "predicted",
    "confidence",
    *PROBABILITY_COLUMNS,
    "entropy",
    "mutual_info",
    "chi2",
    "flag",
]


def predict_table(
    posterior: Posterior | Ensemble,
    images: np.ndarray,
    sources: list[str],
    rule: FlagRule,
    draws: int,
    seed: int,
    chunk_images: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Predict every image from ``draws`` posterior draws and tabulate the result.

    Parameters
    ----------
    posterior : Posterior
        The fitted approximation.
    images : numpy.ndarray
        float32 (n, 784), scaled like the training data, as from
        :func:`bnn.serving.image_input.read_images`.
    sources : list of str
        One label per image, for the ``source`` column.
    rule : FlagRule
        Decides the ``flag`` column.
    draws, seed : int
        Number of posterior draws, and the seed of ``numpy.random.default_rng``:
        the same seed gives the same table.
    chunk_images : int or None
        Images per forward pass, bounding memory. The default, ``None``, sizes
        them to the caches (:func:`bnn.predictive.forward.images_per_chunk`).
    progress : bool
        Draw a progress bar on stderr, and when the first block of draws says
        the whole will take over :data:`LONG_RUN_SECONDS`, print one line with
        the estimate there first. The default is False.

    Returns
    -------
    pandas.DataFrame
        Exactly :data:`COLUMNS`, one row per image (see the module docstring).
    """
    if len(sources) != len(images):
        raise ValueError(f"{len(images)} images but {len(sources)} sources; pass one per image")

    def announce(seconds: float) -> None:
        if seconds > LONG_RUN_SECONDS:
            print(
                f"predict: {draws} draws of {len(images)} image{'s' * (len(images) != 1)} "
                f"will take about "
                f"{duration(seconds)}; showing progress",
                file=sys.stderr,
                flush=True,
            )

    summary = summarise_predictive(
        posterior,
        images,
        draws,
        np.random.default_rng(seed),
        chunk_images=chunk_images,
        **(
            {"progress": "predict", "transient": True, "stderr": True, "on_estimate": announce}
            if progress
            else {}
        ),
    )
    probabilities = summary.mean_probabilities
    predicted = probabilities.argmax(axis=1)
    scores = scores_of(summary)
    columns = {
        "index": np.arange(len(images)),
        "source": list(sources),
        "predicted": predicted,
        "confidence": probabilities[np.arange(len(images)), predicted],
        **dict(zip(PROBABILITY_COLUMNS, probabilities.T, strict=True)),
        "entropy": scores["entropy"],
        "mutual_info": scores["mutual_info"],
        "chi2": chisquare_statistics(summary.label_counts),
        "flag": rule.flags(scores),
    }
    return pd.DataFrame(columns, columns=COLUMNS)


def write_csv(table: pd.DataFrame, out: str | os.PathLike | None) -> None:
    """Write ``table`` as CSV without the pandas index: to stdout, or atomically to ``out``.

    A failed write leaves no partial file, and an existing ``out`` untouched.

    Raises
    ------
    DataError
        If ``out`` cannot be written (a folder, no permission).
    DiskFullError
        If the disk (or the file-size limit) fills during the write.
    """
    if out is None:
        table.to_csv(sys.stdout, index=False)
        return
    try:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    except DiskFullError:
        raise  # already one line: the disk is full and the old file was kept
    except OSError as error:
        raise DataError(
            f"{out}: cannot write the predictions ({error}); choose a writable file"
        ) from None
