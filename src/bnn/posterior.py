"""The fitted mean-field posterior as plain arrays, saved without pickle.

A :class:`Posterior` holds, for each free variable of the model, the mean and
standard deviation of its Gaussian factor (in PyMC's unconstrained space),
plus what is needed to rebuild the network: the architecture spec and the
prior settings. Its draws come back as the network's weights (see
:func:`bnn.priors.network_weights`), whatever the prior's parametrisation.
It is saved as ``posterior.npz`` (``allow_pickle=False``) and
``posterior.json`` beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnn.atomic import atomic_path, write_text
from bnn.errors import DataError
from bnn.networks import spec_from_dict
from bnn.priors import network_weights

ARRAYS_FILE = "posterior.npz"
META_FILE = "posterior.json"


@dataclass
class Posterior:
    """Per-variable Gaussian factors ``N(means[name], stds[name]**2)`` and metadata."""

    means: dict[str, np.ndarray]
    stds: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def spec(self):
        """The architecture spec the weights belong to."""
        return spec_from_dict(self.meta["model"])

    @property
    def is_point_estimate(self) -> bool:
        """True when every sd is zero (``inference=map``): each draw is the same network."""
        return not any(np.any(std) for std in self.stds.values())

    def draw_chunks(
        self, n_draws: int, chunk_size: int, rng: np.random.Generator
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield weight draws in chunks of at most ``chunk_size``, each with a leading draw axis.

        Every free variable is drawn from its Gaussian factor, then the draws
        become network weights (``{layer}_W``, ``{layer}_b``); hyperprior
        scales are used and dropped. Only ``chunk_size`` draws of every
        variable are in memory at once.
        """
        for first in range(0, n_draws, chunk_size):
            size = min(chunk_size, n_draws - first)
            yield network_weights(
                {
                    name: mean
                    + self.stds[name] * rng.standard_normal((size, *mean.shape), mean.dtype)
                    for name, mean in self.means.items()
                }
            )

    def point(self) -> dict[str, np.ndarray]:
        """The network at the means of the factors, as a single draw (leading axis of length 1).

        For a non-centred prior that is ``mean(raw) * exp(mean(log scale))``:
        the weights at the approximation's mode in its own coordinates.
        """
        return network_weights({name: mean[None] for name, mean in self.means.items()})


def from_approximation(approx, meta: dict) -> Posterior:
    """Read the per-variable means and sds out of a fitted ``pm.MeanField``."""
    group = approx.groups[0]
    flat_means = group.mean.eval()
    flat_stds = group.std.eval()
    means, stds = {}, {}
    for name, var_slice, shape, _dtype in group.ordering.values():
        means[name] = flat_means[var_slice].reshape(shape)
        stds[name] = flat_stds[var_slice].reshape(shape)
    return Posterior(means=means, stds=stds, meta=meta)


def save(posterior: Posterior, folder: str | os.PathLike) -> None:
    """Write ``posterior.npz`` and ``posterior.json`` into ``folder``, each atomically."""
    folder = Path(folder)
    arrays = {f"mean/{name}": value for name, value in posterior.means.items()}
    arrays |= {f"std/{name}": value for name, value in posterior.stds.items()}
    with atomic_path(folder / ARRAYS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    write_text(folder / META_FILE, json.dumps(posterior.meta, indent=2, sort_keys=True) + "\n")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path} not found; run the fit stage first (`dvc repro fit_advi`)")
    return path


def load_meta(folder: str | os.PathLike) -> dict:
    """The metadata of a saved posterior, without loading its arrays."""
    return json.loads(_require(Path(folder) / META_FILE).read_text(encoding="utf-8"))


def load(folder: str | os.PathLike) -> Posterior:
    """Load a posterior saved by :func:`save`."""
    arrays_path = _require(Path(folder) / ARRAYS_FILE)
    means, stds = {}, {}
    with np.load(arrays_path, allow_pickle=False) as arrays:
        for key in arrays.files:
            kind, name = key.split("/", 1)
            (means if kind == "mean" else stds)[name] = arrays[key]
    return Posterior(means=means, stds=stds, meta=load_meta(folder))
