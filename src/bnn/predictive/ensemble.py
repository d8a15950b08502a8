"""An ensemble of fitted posteriors: K members of one network, fitted from K seeds.

The ensemble's predictive is the equal-weight mixture of its members'
predictives (:func:`bnn.predictive.chunked.summarise_predictive` spreads the
draws evenly over the members). On disk an ensemble is a folder holding
``ensemble.json`` and one model folder per member (``member-0``, ``member-1``,
...), each exactly what a single fit saves. Every stage that reads a model
folder reads it through :func:`load_model`, :func:`load_model_meta` and
:func:`model_fingerprint`, so a folder of either kind goes wherever the other does.

The ensemble's :class:`~bnn.predictive.posterior.PosteriorMeta` is that of its
members (network, prior, method, dtype), with the ensemble's seed and the
MLflow run of the ensemble (the sweep's parent run) in place of a member's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bnn.core.atomic import write_text
from bnn.core.errors import DataError
from bnn.predictive import posterior
from bnn.predictive.posterior import Posterior, PosteriorMeta

MANIFEST_FILE = "ensemble.json"
SCHEMA_VERSION = 1
# What rebuilds an ensemble folder: the sweep of its members (README, "Ensembles").
REBUILD = "python src/fit.py -m 'ensemble.member=range(K)'"


def member_name(index: int) -> str:
    """The folder of member ``index`` inside the ensemble's folder."""
    return f"member-{index}"


def member_seed(seed: int, index: int) -> int:
    """The seed of member ``index`` of the ensemble whose seed is ``seed``.

    The ``index``-th child of ``SeedSequence(seed)``: members are independent
    streams, and member ``i`` has the same seed whatever the ensemble's size,
    so the first K members of a larger ensemble are the ensemble of K.
    """
    child = np.random.SeedSequence(seed, spawn_key=(index,))
    return int(child.generate_state(1, np.uint32)[0])


@dataclass
class Ensemble:
    """Equal-weight mixture of fitted posteriors of one network."""

    members: list[Posterior]
    meta: PosteriorMeta
    names: list[str]

    @property
    def spec(self):
        return self.members[0].spec

    @property
    def is_point_estimate(self) -> bool:
        """True when every member is a point estimate (an ensemble of MAP fits)."""
        return all(member.is_point_estimate for member in self.members)

    def __len__(self) -> int:
        return len(self.members)

    def first(self, k: int) -> Ensemble:
        """The ensemble of the first ``k`` members (for curves against K)."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be from 1 to {len(self)}, got {k}")
        return replace(self, members=self.members[:k], names=self.names[:k])


def is_ensemble(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an ensemble (its ``ensemble.json``) rather than one posterior."""
    return (Path(folder) / MANIFEST_FILE).is_file()


def write_manifest(folder: str | os.PathLike, names: list[str], meta: PosteriorMeta) -> None:
    """Write ``ensemble.json``: the member folders, in order, and the ensemble's metadata."""
    values = {"members": list(names), "meta": meta.to_dict(), "schema_version": SCHEMA_VERSION}
    write_text(Path(folder) / MANIFEST_FILE, json.dumps(values, indent=2, sort_keys=True) + "\n")


def read_manifest(folder: str | os.PathLike) -> tuple[list[str], PosteriorMeta]:
    """The member folder names and the ensemble's metadata from ``ensemble.json``.

    Raises
    ------
    DataError
        If the file is not JSON, of another schema, or lists no members.
    """
    path = Path(folder) / MANIFEST_FILE
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        names, meta = values["members"], values["meta"]
        version = values.get("schema_version")
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{path} is not an ensemble manifest ({reason}); {_rebuild()}") from None
    if version != SCHEMA_VERSION:
        raise DataError(
            f"{path}: schema version {version!r}; this code reads {SCHEMA_VERSION}. {_rebuild()}"
        )
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path} lists no member folders; {_rebuild()}")
    if any(Path(name).name != name or name in ("", ".", "..") for name in names):
        raise DataError(f"{path}: member names must be folders inside it, got {names}")
    return names, PosteriorMeta.from_dict(meta, str(path))


def _rebuild() -> str:
    return f"rebuild the ensemble with `{REBUILD}`"


def load_ensemble(folder: str | os.PathLike) -> Ensemble:
    """Load every member listed in ``ensemble.json`` and check they are of one network.

    Raises
    ------
    DataError
        If a member is missing or damaged (the message names it), or the members
        differ in network, prior, method or dtype from the manifest.
    """
    folder = Path(folder)
    names, meta = read_manifest(folder)
    members = []
    for name in names:
        if not (folder / name).is_dir():
            raise DataError(
                f"{folder}: member {name} is missing; fit it again with the ensemble's sweep "
                f"(`{REBUILD}`), or remove it from {MANIFEST_FILE}"
            )
        members.append(posterior.load(folder / name))
    for name, member in zip(names, members, strict=True):
        found = _shared(member.meta)
        if found != _shared(meta):
            raise DataError(
                f"{folder / name} is not a member of this ensemble: its {found} differs from "
                f"{folder / MANIFEST_FILE}'s {_shared(meta)}; {_rebuild()}"
            )
    return Ensemble(members=members, meta=meta, names=names)


def _shared(meta: PosteriorMeta) -> dict:
    """What every member of an ensemble has in common."""
    return {
        "model": meta.model,
        "prior": meta.prior,
        "float_dtype": meta.float_dtype,
        "inference_method": meta.inference_method,
    }


def load_model(folder: str | os.PathLike) -> Posterior | Ensemble:
    """The model in ``folder``: an :class:`Ensemble` if it has a manifest, else a posterior."""
    return load_ensemble(folder) if is_ensemble(folder) else posterior.load(folder)


def load_model_meta(folder: str | os.PathLike) -> PosteriorMeta:
    """The metadata of the model in ``folder``, without loading any arrays."""
    if is_ensemble(folder):
        return read_manifest(folder)[1]
    return posterior.load_meta(folder)


def model_fingerprint(folder: str | os.PathLike) -> str:
    """Which model a later file came from: SHA-256 of its files.

    One posterior's is :func:`~bnn.predictive.posterior.fingerprint`; an
    ensemble's hashes its manifest and every member's fingerprint.
    """
    if not is_ensemble(folder):
        return posterior.fingerprint(folder)
    folder = Path(folder)
    names, _ = read_manifest(folder)
    digest = hashlib.sha256((folder / MANIFEST_FILE).read_bytes())
    for name in names:
        if not (folder / name).is_dir():
            raise DataError(f"{folder}: member {name} is missing; {_rebuild()}")
        digest.update(posterior.fingerprint(folder / name).encode())
    return digest.hexdigest()
