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

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path, write_text
from bnn.core.errors import DataError
from bnn.model.specs import SPECS, spec_from_dict
from bnn.model.weights import network_weights

ARRAYS_FILE = "posterior.npz"
META_FILE = "posterior.json"


# Version 1 is every posterior.json this project has written; a file without the
# field is version 1. Bump it when a field changes meaning, and read the old one.
SCHEMA_VERSION = 1
# What rebuilds every file of the model folder; -f because DVC would otherwise see
# the stage as up to date when only its output was damaged.
REBUILD = "dvc repro -f fit_advi"
# What a damaged .npz can raise: numpy's reader, zipfile and zlib underneath it.
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


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
                f"{source}: schema version {version!r} without a readable model; this code "
                f"reads version {SCHEMA_VERSION}. Rebuild it with `{REBUILD}`"
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
        raise DataError(f"{path} not found; rebuild the model folder with `{REBUILD}`")
    return path


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_meta(folder: str | os.PathLike) -> PosteriorMeta:
    """The metadata of a saved posterior, without loading its arrays.

    Raises
    ------
    DataError
        If ``posterior.json`` is missing, not JSON, of another schema version,
        or describes no network this code knows. The message names the file
        and the command that rebuilds it.
    """
    path = _require(Path(folder) / META_FILE)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError included
        raise DataError(
            f"{path} is not readable JSON ({_one_line(error)}); rebuild it with `{REBUILD}`"
        ) from None
    if not isinstance(values, dict):
        raise DataError(
            f"{path} holds a JSON {type(values).__name__}, not the posterior's metadata "
            f"object; rebuild it with `{REBUILD}`"
        )
    meta = PosteriorMeta.from_dict(values, str(path))
    _check_meta(meta, path)
    return meta


def _check_meta(meta: PosteriorMeta, path: Path) -> None:
    def bad(problem: str) -> DataError:
        return DataError(f"{path}: {problem}; rebuild it with `{REBUILD}`")

    if not isinstance(meta.model, dict) or meta.model.get("name") not in SPECS:
        raise bad(f"model {meta.model!r} is not one of the networks {', '.join(SPECS)}")
    try:
        spec_from_dict(meta.model)
    except (TypeError, ValueError, KeyError) as error:  # ConfigError is a ValueError
        raise bad(f"model {meta.model!r} is not a valid network ({_one_line(error)})") from None
    if meta.prior is not None and not isinstance(meta.prior, dict):
        raise bad(f"prior must be an object or null, got {meta.prior!r}")
    if meta.float_dtype not in ("float32", "float64"):
        raise bad(f"float_dtype must be float32 or float64, got {meta.float_dtype!r}")
    for name in ("inference_method", "mlflow_run_id"):
        value = getattr(meta, name)
        if value is not None and not isinstance(value, str):
            raise bad(f"{name} must be a string, got {value!r}")
    if meta.seed is not None and (isinstance(meta.seed, bool) or not isinstance(meta.seed, int)):
        raise bad(f"seed must be an integer or null, got {meta.seed!r}")


def load(folder: str | os.PathLike) -> Posterior:
    """Load a posterior saved by :func:`save`, checking the arrays against the metadata.

    Raises
    ------
    DataError
        If a file is missing, truncated or corrupt, or the arrays are not those
        of the network ``posterior.json`` describes (names, shapes, finite
        means, non-negative sds). The message names the file and the command
        that rebuilds it (:data:`REBUILD`).
    """
    meta = load_meta(folder)
    arrays_path = _require(Path(folder) / ARRAYS_FILE)
    means, stds = {}, {}
    try:
        # Our own handle: np.load leaves its file open when a zip archive is corrupt.
        with open(arrays_path, "rb") as handle:
            arrays = np.load(handle, allow_pickle=False)
            if not isinstance(arrays, np.lib.npyio.NpzFile):
                raise DataError(
                    f"{arrays_path} holds one bare array, not the posterior's archive; "
                    f"rebuild it with `{REBUILD}`"
                )
            with arrays:
                for key in arrays.files:
                    kind, _, name = key.partition("/")
                    if kind not in ("mean", "std") or not name:
                        raise DataError(
                            f"{arrays_path}: unexpected array {key!r} (expected mean/<name> "
                            f"and std/<name>); rebuild it with `{REBUILD}`"
                        )
                    (means if kind == "mean" else stds)[name] = arrays[key]
    except DataError:
        raise
    except NPZ_READ_ERRORS as error:
        raise DataError(
            f"{arrays_path} is truncated or corrupt ({_one_line(error)}); "
            f"rebuild it with `{REBUILD}`"
        ) from None
    _check_arrays(means, stds, meta, arrays_path)
    return Posterior(means=means, stds=stds, meta=meta)


def _check_arrays(means: dict, stds: dict, meta: PosteriorMeta, path: Path) -> None:
    """The arrays make the network ``meta`` describes, with finite means and sds >= 0."""

    def bad(problem: str) -> DataError:
        return DataError(f"{path}: {problem}; rebuild it with `{REBUILD}`")

    if not means:
        raise bad("the archive holds no arrays")
    if set(means) != set(stds):
        odd = sorted(set(means) ^ set(stds))
        raise bad(f"{', '.join(odd)}: a mean without an sd, or an sd without a mean")
    for name, mean in means.items():
        std = stds[name]
        if mean.dtype.kind != "f" or mean.shape != std.shape or std.dtype != mean.dtype:
            raise bad(
                f"mean and sd of {name} differ ({mean.dtype}{mean.shape}, {std.dtype}"
                f"{std.shape}) or are not floats"
            )
        if not np.isfinite(mean).all() or not (np.isfinite(std).all() and (std >= 0).all()):
            raise bad(f"{name} holds NaN, infinite or negative-sd values")
    expected = spec_from_dict(meta.model).weight_shapes()
    try:
        point = network_weights({name: mean[None] for name, mean in means.items()})
    except (KeyError, ValueError) as error:
        raise bad(f"the variables do not make a network ({_one_line(error)})") from None
    found = {name: value.shape[1:] for name, value in point.items()}
    if found != expected:
        wrong = sorted(
            name for name in set(found) | set(expected) if found.get(name) != expected.get(name)
        )
        detail = ", ".join(f"{n} {found.get(n)} (expected {expected.get(n)})" for n in wrong[:3])
        raise bad(
            f"its weights are not those of the {meta.model['name']} network "
            f"posterior.json describes: {detail}"
        )


def fingerprint(folder: str | os.PathLike) -> str:
    """SHA-256 of ``posterior.npz`` and ``posterior.json``: which posterior a later file came from.

    The JSON holds the fit's MLflow run id and seed, so a refit of identical
    arrays still gets a new fingerprint.
    """
    digest = hashlib.sha256()
    for name in (ARRAYS_FILE, META_FILE):
        path = _require(Path(folder) / name)
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_network(meta: PosteriorMeta, spec, folder: str | os.PathLike) -> None:
    """Refuse a posterior fitted for another network than the config's ``spec``.

    Raises
    ------
    DataError
        If ``meta.model`` differs from ``spec.to_dict()``; the message names both
        and the command that refits.
    """
    if meta.model != spec.to_dict():
        path = Path(folder) / META_FILE
        raise DataError(
            f"{path} is a posterior of the network {meta.model}, but the config asks for "
            f"{spec.to_dict()}; refit with `{REBUILD}`, or set model to match"
        )
