"""Ensembles as a sweep: each member a fit of its own, then one manifest and flag rule.

``python src/fit.py -m 'ensemble.member=range(K)' ensemble.members=K`` runs one
job per member (:func:`fit_member`), in whatever processes the Hydra launcher
gives it; each member is a whole fit, saved as a single fit is, into
``<ensemble.folder>/member-<i>`` with its checkpoints, and logged as a child of
the sweep's parent MLflow run. When every job has ended, the sweep callback
(:mod:`bnn.pipeline.sweep`) calls :func:`assemble`, which writes
``ensemble.json`` and the ensemble's own flag rule, chosen on the mixture's
validation predictive, and logs the ensemble to the parent run as one pyfunc model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bnn.core.errors import DataError
from bnn.data.dataset import load_split
from bnn.pipeline import tracking
from bnn.pipeline.fit_stage import DEFAULT_FLAG, fit, variant_name
from bnn.pipeline.paths import Paths
from bnn.predictive import ensemble, posterior
from bnn.serving import flag_rule, pyfunc_model


@dataclass(frozen=True)
class CompareSettings:
    """``ensemble.compare``: which ensembles, which sizes K, how many draws of each member."""

    folders: tuple[Path, ...]
    sizes: tuple[int, ...] = (1, 2, 3, 5, 10)
    draws_per_member: int = 10


@dataclass(frozen=True)
class EnsembleSettings:
    """``ensemble`` in ``conf/config.yaml``: the number of members, which one to fit, where."""

    members: int = 5
    member: int | None = None
    folder: Path = Path("ensembles/dense-advi")


def member_paths(paths: Paths, folder: Path, index: int) -> Paths:
    """A member's model folder, which also holds its fit metrics (fit.json, elbo.tsv, ...)."""
    member = folder / ensemble.member_name(index)
    return replace(paths, models=member, metrics=member)


def fit_member(paths: Paths, members: EnsembleSettings, seed: int, uri: str, **fit_kwargs) -> str:
    """Fit member ``members.member`` from its own seed (see ``ensemble.member_seed``).

    ``fit_kwargs`` are :func:`bnn.pipeline.fit_stage.fit`'s (network, prior,
    inference settings, ...); returns the member's MLflow run id. A member
    already fitted with these settings and data is kept, so rerunning the sweep
    fits only the members that are missing (an interrupted one resumes from its
    checkpoint). A member has no flag rule or pyfunc model of its own: the
    ensemble's are made from the mixture (:func:`assemble`).
    """
    index = members.member
    tags = (fit_kwargs.pop("run_tags", None) or {}) | {
        tracking.ENSEMBLE_TAG: str(members.folder),
        tracking.MEMBER_TAG: str(index),
    }
    name = variant_name(fit_kwargs["spec"].name, fit_kwargs["params"], fit_kwargs["settings"])
    return fit(
        member_paths(paths, members.folder, index),
        seed=ensemble.member_seed(seed, index),
        uri=uri,
        run_tags=tags,
        run_name=f"{name}-member{index}",
        keep_finished=True,
        **fit_kwargs | {"flag": None},
    )


def assemble(
    folder: Path,
    members: int,
    seed: int,
    processed: Path,
    uri: str,
    parent_run_id: str | None,
    flag: flag_rule.FlagSettings = DEFAULT_FLAG,
) -> ensemble.Ensemble:
    """Write ``ensemble.json`` for members ``0 .. members-1`` and the mixture's ``flag.json``.

    The manifest is written last but one, after every member has been read
    back, so a folder with a manifest is an ensemble whose members all loaded.

    Raises
    ------
    DataError
        If a member is missing or damaged, or the members are of different fits.
    """
    names = [ensemble.member_name(index) for index in range(members)]
    missing = [name for name in names if not (folder / name).is_dir()]
    if missing:
        raise DataError(
            f"{folder}: {', '.join(missing)} missing; run the members' sweep again "
            f"(`python src/fit.py -m 'ensemble.member=range({members})'`): finished members "
            "are refitted identically, interrupted ones resume from their checkpoints"
        )
    first = posterior.load_meta(folder / names[0])
    meta = replace(first, seed=seed, mlflow_run_id=parent_run_id)
    ensemble.write_manifest(folder, names, meta)
    mixture = ensemble.load_ensemble(folder)
    valid = load_split(processed, "valid")
    rule = flag_rule.rule_from_validation(
        mixture, valid.images, valid.labels, seed=seed, **asdict(flag)
    )
    flag_rule.save(rule, folder)
    with tracking.resumed_run(uri, parent_run_id) as active:
        if active:
            tracking.set_tags({tracking.ENSEMBLE_TAG: str(folder), "bnn.ensemble_members": members})
            tracking.log_metrics(
                {
                    "ensemble_members": members,
                    "flag_valid_flagged_fraction": rule.valid_flagged_fraction,
                }
            )
            pyfunc_model.log_model(folder, artifact_path="ensemble")
    print(
        f"ensemble: {members} members in {folder}; flag rule flags "
        f"{rule.valid_flagged_fraction:.1%} of validation images"
    )
    return mixture
