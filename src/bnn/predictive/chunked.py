"""The posterior predictive, reduced as it is drawn to a few numbers per image.

Weights are drawn in chunks, and every chunk goes through one batched NumPy
forward pass (see :mod:`bnn.predictive.forward`). Each chunk's class probabilities are
folded into running sums at once, so memory is bounded by the chunk sizes,
whatever the number of draws. What is kept per image is all that the
evaluation needs:

- the predictive distribution, the mean of the draws' class probabilities;
- the mean of the draws' entropies, for the mutual information;
- how many draws voted for each class (their argmax), for the variation ratio;
- how often each class was sampled as the label, one label per draw: the
  2016 experiment's mode rule and chi-square statistic;
- the mean over members of the entropy of each member's predictive: for an
  ensemble (:class:`~bnn.predictive.ensemble.Ensemble`), the part of the mutual
  information due to disagreement between members is the predictive entropy
  less this; for one posterior it equals the predictive entropy.

An ensemble's predictive is the mixture of its members': the draws are spread
evenly over the members, each member's summarised as one posterior's, and the
summaries added up (:func:`combine`), which is what drawing from the mixture and
reducing the draws in one pass would give.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path
from bnn.core.errors import ConfigError, DataError
from bnn.core.mnist import N_CLASSES
from bnn.core.progress import progress_bar
from bnn.core.threads import ordered_map
from bnn.predictive.ensemble import Ensemble
from bnn.predictive.forward import chunks_per_pass, class_probabilities, images_per_chunk
from bnn.predictive.posterior import NPZ_READ_ERRORS, Posterior
from bnn.predictive.reductions import entropy, label_counts


@dataclass
class PredictiveSummary:
    """Per-image reductions of ``n_draws`` posterior-predictive draws.

    ``mean_probabilities`` (images, classes), ``expected_entropy`` and
    ``member_entropy`` (images,) are float64; ``vote_counts`` and
    ``label_counts`` (images, classes) count draws, and each of their rows
    sums to ``n_draws``. ``member_entropy`` is the draw-weighted mean of each
    ensemble member's predictive entropy (one posterior: its predictive entropy).
    """

    mean_probabilities: np.ndarray
    expected_entropy: np.ndarray
    vote_counts: np.ndarray
    label_counts: np.ndarray
    n_draws: int
    member_entropy: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.member_entropy is None:  # one posterior's summary
            self.member_entropy = entropy(self.mean_probabilities)

    def __len__(self) -> int:
        return len(self.mean_probabilities)


@dataclass
class PredictiveSamples:
    """Every draw kept: ``probabilities`` (draws, images, classes), ``sampled_labels``.

    Memory grows with the draws; this is for small inputs and for tests that
    compare draws one by one. The pipeline uses :func:`summarise_predictive`.
    """

    probabilities: np.ndarray
    sampled_labels: np.ndarray

    @property
    def mean_probabilities(self) -> np.ndarray:
        """The posterior predictive distribution of each image, (images, classes)."""
        return self.probabilities.mean(axis=0, dtype=np.float64)


def sample_categorical(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row of ``probabilities`` (..., classes), by inverting the CDF."""
    cumulative = np.cumsum(probabilities, axis=-1)
    uniform = rng.random((*probabilities.shape[:-1], 1)) * cumulative[..., -1:]
    labels = (cumulative < uniform).sum(axis=-1)
    return np.minimum(labels, probabilities.shape[-1] - 1).astype(np.uint8)


def probability_chunks(
    posterior: Posterior,
    images: np.ndarray,
    n_draws: int,
    rng: np.random.Generator,
    chunk_draws: int,
    chunk_images: int | None,
    workers: int | None = None,
) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Yield ``(draws, rows, probabilities)``: one block of draws x images at a time, in order.

    ``chunk_images=None`` sizes the blocks to the caches
    (:func:`bnn.predictive.forward.images_per_chunk`). A forward pass may take
    several consecutive blocks of the same draws
    (:func:`bnn.predictive.forward.chunks_per_pass`); they are yielded one by
    one all the same, so what the caller sees (the blocks, their order, the
    labels it samples from them) does not depend on the pass size. The passes
    run on ``workers`` threads, one BLAS thread each
    (:func:`bnn.core.threads.ordered_map`; the default, None, is as many as
    BLAS threads are in force: the stages pin 2).
    Weights are drawn here, in order, so the blocks and their values do not
    depend on ``workers``.
    """
    spec = posterior.spec
    if chunk_images is None:
        chunk_images = images_per_chunk(spec, chunk_draws, images.dtype.itemsize)
    pass_images = chunk_images * chunks_per_pass(
        spec, chunk_draws, chunk_images, images.dtype.itemsize
    )

    def passes():
        first_draw = 0
        for weights in posterior.draw_chunks(n_draws, chunk_draws, rng):
            draws = slice(first_draw, first_draw + len(next(iter(weights.values()))))
            for first_image in range(0, len(images), pass_images):
                yield draws, slice(first_image, first_image + pass_images), weights
            first_draw = draws.stop

    def forward(one_pass):
        draws, rows, weights = one_pass
        probabilities = class_probabilities(images[rows], spec, weights)
        blocks = []
        for first in range(0, probabilities.shape[1], chunk_images):
            block_rows = slice(rows.start + first, rows.start + first + chunk_images)
            blocks.append((draws, block_rows, probabilities[:, first : first + chunk_images]))
        return blocks

    for blocks in ordered_map(forward, passes(), workers):
        yield from blocks


def _as_network_input(posterior: Posterior, images: np.ndarray) -> np.ndarray:
    dtype = next(iter(posterior.means.values())).dtype
    return np.asarray(images, dtype=dtype).reshape(len(images), -1)


def summarise_predictive(
    posterior: Posterior,
    images: np.ndarray,
    n_draws: int,
    rng: np.random.Generator,
    chunk_draws: int = 10,
    chunk_images: int | None = None,
    progress: str | None = None,
    transient: bool = False,
    **progress_options,
) -> PredictiveSummary:
    """Draw ``n_draws`` weight samples, evaluate every image under each, and reduce.

    Peak memory is one chunk of ``chunk_draws`` x ``chunk_images`` forward
    passes plus a few numbers per image, however large ``n_draws`` is.

    A point estimate (every posterior sd zero, as ``inference=map`` saves)
    has one network: it is evaluated once, and its ``n_draws`` labels are
    drawn as one multinomial count per image, the same distribution.

    Parameters
    ----------
    posterior : Posterior
        The fitted approximation.
    images : ndarray
        Shape (n_images, 28, 28) or (n_images, 784), scaled like the training data.
    n_draws : int
        Number of posterior draws.
    rng : numpy.random.Generator
        Source of the weight draws and the sampled labels.
    chunk_draws, chunk_images : int
        How many draws and images go through the network at once. The defaults
        are 10 draws, and as many images as fit the caches
        (:func:`bnn.predictive.forward.images_per_chunk`).
    progress : str or None
        Label of a progress bar over the blocks; the default, None, draws none.
    transient : bool
        Remove the bar once done (see :func:`bnn.core.progress.progress_bar`).
    **progress_options
        ``stderr`` and ``on_estimate`` of :func:`bnn.core.progress.progress_bar`.
    """
    if isinstance(posterior, Ensemble):
        return _summarise_mixture(
            posterior,
            images,
            n_draws,
            rng,
            chunk_draws,
            chunk_images,
            progress,
            transient,
            **progress_options,
        )
    images = _as_network_input(posterior, images)
    if posterior.is_point_estimate:
        return _summarise_point(posterior, images, n_draws, rng, chunk_images)
    if chunk_images is None:
        chunk_images = images_per_chunk(posterior.spec, chunk_draws, images.dtype.itemsize)
    n_images = len(images)
    summary = PredictiveSummary(
        mean_probabilities=np.zeros((n_images, N_CLASSES)),
        expected_entropy=np.zeros(n_images),
        vote_counts=np.zeros((n_images, N_CLASSES), dtype=np.int64),
        label_counts=np.zeros((n_images, N_CLASSES), dtype=np.int64),
        n_draws=n_draws,
        member_entropy=np.zeros(n_images),  # set once the means are complete
    )
    # Weights and labels draw from streams of their own, so the weight draws are
    # those of sample_predictive with the same seed, whatever the chunking.
    weight_rng, label_rng = rng.spawn(2)
    chunks = probability_chunks(posterior, images, n_draws, weight_rng, chunk_draws, chunk_images)
    n_blocks = math.ceil(n_draws / chunk_draws) * math.ceil(n_images / chunk_images)
    with progress_bar(progress, n_blocks, transient, **progress_options) as advance:
        for _, rows, probabilities in chunks:
            summary.mean_probabilities[rows] += probabilities.sum(axis=0, dtype=np.float64)
            summary.expected_entropy[rows] += entropy(probabilities).sum(axis=0, dtype=np.float64)
            summary.vote_counts[rows] += label_counts(probabilities.argmax(axis=-1))
            summary.label_counts[rows] += label_counts(sample_categorical(probabilities, label_rng))
            advance(1)
    summary.mean_probabilities /= n_draws
    summary.expected_entropy /= n_draws
    summary.member_entropy = entropy(summary.mean_probabilities)
    return summary


def draws_per_member(n_draws: int, n_members: int) -> list[int]:
    """``n_draws`` spread evenly over the members, the first ``n_draws % n_members`` one more.

    Raises
    ------
    ConfigError
        If there are fewer draws than members: a member without a draw is not in the mixture.
    """
    if n_draws < n_members:
        raise ConfigError(
            f"{n_draws} draws cannot be spread over an ensemble of {n_members} members; "
            f"draw at least {n_members}"
        )
    share, extra = divmod(n_draws, n_members)
    return [share + (index < extra) for index in range(n_members)]


def combine(summaries: Sequence[PredictiveSummary]) -> PredictiveSummary:
    """The summary of all the draws of ``summaries`` together: the mixture of their predictives.

    Each summary counts by its draws: means are draw-weighted, counts add up.
    ``member_entropy`` becomes the draw-weighted mean of each summary's own.
    """
    weights = np.array([summary.n_draws for summary in summaries], dtype=np.float64)
    weights /= weights.sum()

    def mean_of(name: str) -> np.ndarray:
        return sum(w * getattr(s, name) for w, s in zip(weights, summaries, strict=True))

    return PredictiveSummary(
        mean_probabilities=mean_of("mean_probabilities"),
        expected_entropy=mean_of("expected_entropy"),
        vote_counts=sum(summary.vote_counts for summary in summaries),
        label_counts=sum(summary.label_counts for summary in summaries),
        n_draws=sum(summary.n_draws for summary in summaries),
        member_entropy=mean_of("member_entropy"),
    )


def _summarise_mixture(
    ensemble: Ensemble,
    images,
    n_draws,
    rng,
    chunk_draws,
    chunk_images,
    progress,
    transient,
    **progress_options,
) -> PredictiveSummary:
    shares = draws_per_member(n_draws, len(ensemble))
    summaries = [
        summarise_predictive(
            member,
            images,
            share,
            member_rng,
            chunk_draws,
            chunk_images,
            progress and f"{progress} (member {index + 1}/{len(ensemble)})",
            transient,
            **progress_options,
        )
        for index, (member, share, member_rng) in enumerate(
            zip(ensemble.members, shares, rng.spawn(len(ensemble)), strict=True)
        )
    ]
    return combine(summaries)


def _summarise_point(
    posterior: Posterior, images: np.ndarray, n_draws: int, rng, chunk_images: int | None
) -> PredictiveSummary:
    chunks = probability_chunks(posterior, images, 1, rng, 1, chunk_images)
    probabilities = np.concatenate([block[0] for _, _, block in chunks]).astype(np.float64)
    # Renormalise in float64: multinomial refuses sums above 1 by round-off.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    votes = np.zeros_like(probabilities, dtype=np.int64)
    votes[np.arange(len(images)), probabilities.argmax(axis=1)] = n_draws
    # The same function on the same values as the predictive entropy: MI is exactly 0.
    expected_entropy = entropy(probabilities)
    return PredictiveSummary(
        mean_probabilities=probabilities,
        expected_entropy=expected_entropy,
        vote_counts=votes,
        label_counts=rng.multinomial(n_draws, probabilities),
        n_draws=n_draws,
        member_entropy=expected_entropy.copy(),
    )


def sample_predictive(
    posterior: Posterior,
    images: np.ndarray,
    n_draws: int,
    rng: np.random.Generator,
    chunk_draws: int = 10,
    chunk_images: int | None = None,
) -> PredictiveSamples:
    """Every draw's class probabilities and sampled labels (memory grows with ``n_draws``).

    The same forward passes as :func:`summarise_predictive`, kept instead of
    reduced; see there for the parameters. An ensemble's draws are its
    members', in member order, spread as :func:`draws_per_member` says.
    """
    if isinstance(posterior, Ensemble):
        shares = draws_per_member(n_draws, len(posterior))
        parts = [
            sample_predictive(member, images, share, member_rng, chunk_draws, chunk_images)
            for member, share, member_rng in zip(
                posterior.members, shares, rng.spawn(len(posterior)), strict=True
            )
        ]
        return PredictiveSamples(
            np.concatenate([part.probabilities for part in parts]),
            np.concatenate([part.sampled_labels for part in parts]),
        )
    images = _as_network_input(posterior, images)
    probabilities = np.empty((n_draws, len(images), N_CLASSES), dtype=images.dtype)
    weight_rng, label_rng = rng.spawn(2)
    chunks = probability_chunks(posterior, images, n_draws, weight_rng, chunk_draws, chunk_images)
    for draws, rows, block in chunks:
        probabilities[draws, rows] = block
    return PredictiveSamples(probabilities, sample_categorical(probabilities, label_rng))


def save(
    path: str | os.PathLike, summaries: Mapping[str, PredictiveSummary], **arrays: np.ndarray
) -> None:
    """Write named summaries (and extra arrays such as ``labels``) to one ``.npz``, atomically."""
    named = {
        f"{name}/{f.name}": np.asarray(getattr(summary, f.name))
        for name, summary in summaries.items()
        for f in fields(PredictiveSummary)
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **named, **{key: np.asarray(value) for key, value in arrays.items()})


def load(
    path: str | os.PathLike, rebuild: str = "dvc repro -f sample_ppc"
) -> tuple[dict[str, PredictiveSummary], dict[str, np.ndarray]]:
    """Read what :func:`save` wrote: the summaries by name, and the extra arrays.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    rebuild : str
        The command that writes it again, for the error message. The default
        is ``dvc repro -f sample_ppc``.

    Raises
    ------
    DataError
        If the file is missing, truncated or corrupt, or a summary's arrays are
        incomplete or of inconsistent shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; rebuild it with `{rebuild}`")
    parts: dict[str, dict] = {}
    extra = {}
    try:
        with open(path, "rb") as handle:
            data = np.load(handle, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise DataError(f"{path} is not an .npz archive; rebuild it with `{rebuild}`")
            with data:
                for key in data.files:
                    name, _, part = key.rpartition("/")
                    if name:
                        parts.setdefault(name, {})[part] = data[key]
                    else:
                        extra[key] = data[key]
    except DataError:
        raise
    except NPZ_READ_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(
            f"{path} is truncated or corrupt ({reason}); rebuild it with `{rebuild}`"
        ) from None
    summaries = {}
    for name, values in parts.items():
        problem = _summary_problem(values)
        if problem:
            raise DataError(f"{path}: summary {name!r} {problem}; rebuild it with `{rebuild}`")
        summaries[name] = PredictiveSummary(**values | {"n_draws": int(values["n_draws"])})
    return summaries, extra


def _summary_problem(values: dict) -> str | None:
    """Why these arrays are not one :class:`PredictiveSummary`, or None."""
    names = {f.name for f in fields(PredictiveSummary)}
    if set(values) != names:
        return f"has arrays {sorted(values)}, expected {sorted(names)}"
    n_draws = values["n_draws"]
    if n_draws.shape != () or n_draws.dtype.kind not in "iu" or n_draws <= 0:
        return f"has n_draws {n_draws!r}, not a positive integer"
    if values["expected_entropy"].ndim != 1 or (
        values["member_entropy"].shape != values["expected_entropy"].shape
    ):
        return "has arrays of inconsistent shapes"
    table_shape = (len(values["expected_entropy"]), N_CLASSES)
    if any(
        values[key].shape != table_shape
        for key in ("mean_probabilities", "vote_counts", "label_counts")
    ):
        return "has arrays of inconsistent shapes"
    return None
