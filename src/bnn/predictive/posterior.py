"""The fitted mean-field posterior as plain arrays, saved without pickle.

A :class:`Posterior` holds, for each free variable of the model, the mean and
standard deviation of its Gaussian factor (in PyMC's unconstrained space),
plus what is needed to rebuild the network: the architecture spec and the
prior settings. Its draws come back as the network's weights (see
:func:`bnn.model.weights.network_weights`), whatever the prior's parametrisation.
It is saved as ``posterior.npz`` (``allow_pickle=False``) and
``posterior.json`` beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path, write_text
from bnn.core.errors import DataError
from bnn.model.specs import spec_from_dict
from bnn.model.weights import network_weights

ARRAYS_FILE = "posterior.npz"
META_FILE = "posterior.json"


# Version 1 is every posterior.json this project has written; a file without the
# field is version 1. Bump it when a field changes meaning, and read the old one.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PosteriorMeta:
    """What a saved posterior says about itself: the contract between the stages.

    Attributes
    ----------
    model : dict
        The architecture spec (:meth:`bnn.model.specs.DenseSpec.to_dict`).
    prior : dict or None
        The prior's settings (``conf/prior/*.yaml``), read by
        :func:`bnn.model.priors.prior_from_dict`.
    float_dtype : str
        The dtype the fit ran in.
    inference_method : str
        ``advi``, ``map`` or ``lrt``.
    seed : int or None
        The fit's seed.
    mlflow_run_id : str or None
        The fit's MLflow run, which the later stages add to.
    schema_version : int
        :data:`SCHEMA_VERSION` when written.
    """

    model: dict
    prior: dict | None = None
    float_dtype: str = "float32"
    inference_method: str = "advi"
    seed: int | None = None
    mlflow_run_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "posterior.json") -> PosteriorMeta:
        """Read saved metadata; a newer schema or a missing model is a :class:`DataError`."""
        values = dict(values)
        version = values.setdefault("schema_version", 1)
        if version != SCHEMA_VERSION or "model" not in values:
            raise DataError(
                f"{source}: schema version {version} without a readable model; this code reads "
                f"version {SCHEMA_VERSION}. Re-run the fit stage (`dvc repro fit_advi`)"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass
class Posterior:
    """Per-variable Gaussian factors ``N(means[name], stds[name]**2)`` and metadata."""

    means: dict[str, np.ndarray]
    stds: dict[str, np.ndarray]
    meta: PosteriorMeta | Mapping | None = None

    def __post_init__(self) -> None:
        # A mapping (a test's, or a saved file's) is read once, here; every reader
        # then uses the typed fields.
        if not isinstance(self.meta, PosteriorMeta):
            self.meta = PosteriorMeta.from_dict(self.meta or {"model": {}})

    @property
    def spec(self):
        """The architecture spec the weights belong to."""
        return spec_from_dict(self.meta.model)

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


def save(posterior: Posterior, folder: str | os.PathLike) -> None:
    """Write ``posterior.npz`` and ``posterior.json`` into ``folder``, each atomically."""
    folder = Path(folder)
    arrays = {f"mean/{name}": value for name, value in posterior.means.items()}
    arrays |= {f"std/{name}": value for name, value in posterior.stds.items()}
    with atomic_path(folder / ARRAYS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    write_text(
        folder / META_FILE, json.dumps(posterior.meta.to_dict(), indent=2, sort_keys=True) + "\n"
    )


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path} not found; run the fit stage first (`dvc repro fit_advi`)")
    return path


def load_meta(folder: str | os.PathLike) -> PosteriorMeta:
    """The metadata of a saved posterior, without loading its arrays."""
    path = _require(Path(folder) / META_FILE)
    return PosteriorMeta.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))


def load(folder: str | os.PathLike) -> Posterior:
    """Load a posterior saved by :func:`save`."""
    arrays_path = _require(Path(folder) / ARRAYS_FILE)
    means, stds = {}, {}
    with np.load(arrays_path, allow_pickle=False) as arrays:
        for key in arrays.files:
            kind, name = key.split("/", 1)
            (means if kind == "mean" else stds)[name] = arrays[key]
    return Posterior(means=means, stds=stds, meta=load_meta(folder))
