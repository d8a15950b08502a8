"""Turning the composed Hydra config into plain, validated settings.

This is the edge where config becomes typed values: library functions receive
dataclasses and keyword arguments, never a ``DictConfig``. Every check names
the key and the file that sets it, so the message says what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from bnn.core.errors import ConfigError
from bnn.data.dataset import split_size
from bnn.data.shifted_inputs import OOD_SETS
from bnn.evaluation.scoring import SCORES
from bnn.inference.checkpoint import CheckpointSettings
from bnn.inference.settings import (
    ENGINES,
    INIT_SCHEMES,
    LR_DECAYS,
    METHODS,
    OPTIMIZER_NAMES,
    AdviSettings,
)
from bnn.model.priors import PRIOR_FAMILIES, FixedNormal, HierarchicalNormal
from bnn.model.specs import SPECS, ConvSpec, DenseSpec
from bnn.pipeline import tracking
from bnn.pipeline.ensemble_stage import CompareSettings, EnsembleSettings
from bnn.pipeline.paths import Paths
from bnn.serving.flag_rule import FlagSettings

FLOAT_DTYPES = ("float32", "float64")
ACTIVATIONS = ("tanh",)


CONFIG_GROUPS = ("data", "model", "prior", "inference")
SPLIT_STRATEGIES = ("last", "random")
# The top level of conf/config.yaml with its groups; anything else is a misspelling.
TOP_LEVEL_KEYS = frozenset(
    {*CONFIG_GROUPS, "seed", "preset", "paths", "predictive", "flag", "shift", "ood", "mlflow"}
    | {"checkpoint", "ensemble"}
)


def _where(group: str, section: Mapping) -> str:
    if group not in CONFIG_GROUPS:
        return "conf/config.yaml"
    option = section.get("name") or section.get("family") or section.get("method")
    return f"conf/{group}/{option}.yaml" if isinstance(option, str) else f"conf/{group}/"


def _fail(group: str, section: Mapping, key: str, problem: str) -> ConfigError:
    # A top-level setting (seed, preset) is its own group: "seed", not "seed.seed".
    name = key if key == group else f"{group}.{key}"
    return ConfigError(f"{name} {problem} ({_where(group, section)})")


def positive_int(group: str, section: Mapping, key: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(group, section, key, f"must be a positive integer, got {value!r}")
    return value


def _is_number(value) -> bool:
    """A finite int or float: ``inf`` and ``nan`` are refused, as are booleans."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def positive_float(group: str, section: Mapping, key: str) -> float:
    value = section.get(key)
    if not _is_number(value) or not value > 0:
        raise _fail(group, section, key, f"must be a finite positive number, got {value!r}")
    return float(value)


def fraction(group: str, section: Mapping, key: str) -> float:
    value = section.get(key)
    if not _is_number(value) or not 0 <= value <= 1:
        raise _fail(group, section, key, f"must be a number in [0, 1], got {value!r}")
    return float(value)


def non_negative_int(group: str, section: Mapping, key: str, below: int | None = None) -> int:
    value = section.get(key)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < 0
        or (below is not None and value >= below)
    ):
        bound = f"from 0 to {below - 1}" if below is not None else "of at least 0"
        raise _fail(group, section, key, f"must be an integer {bound}, got {value!r}")
    return value


def text(group: str, section: Mapping, key: str, optional: bool = False) -> str | None:
    value = section.get(key)
    if optional and value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        kind = "a non-empty string" + (" or null" if optional else "")
        raise _fail(group, section, key, f"must be {kind}, got {value!r}")
    return value


def choice(group: str, section: Mapping, key: str, options) -> str:
    value = section.get(key)
    if value not in options:
        valid = ", ".join(options)
        raise _fail(group, section, key, f"must be one of {valid}; got {value!r}")
    return value


def positive_ints(group: str, section: Mapping, key: str, allow_empty: bool = False) -> tuple:
    values = section.get(key)
    if (not _is_sequence(values) or (not values and not allow_empty)) or any(
        isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in values
    ):
        raise _fail(group, section, key, f"must be a list of positive integers, got {values!r}")
    return tuple(values)


def _is_sequence(value) -> bool:
    """A list (or OmegaConf's ListConfig), not a string or a mapping."""
    return isinstance(value, Sequence | ListConfig) and not isinstance(value, str)


def model_spec(model: Mapping) -> DenseSpec | ConvSpec:
    """The architecture from ``conf/model/*.yaml``; shape errors name the layer.

    The spec class registered under ``model.name`` says which keys there are:
    each field is read and checked by its type (a tuple of layer sizes, an
    integer, the activation), so a new architecture needs no code here.
    """
    name = choice("model", model, "name", tuple(SPECS))
    spec_class = SPECS[name]
    settings = {f.name: f for f in fields(spec_class) if f.name != "name"}
    unknown = sorted(set(model) - set(settings) - {"name"})
    if unknown:
        raise _fail("model", model, unknown[0], f"is not a setting of model {name}")
    values = {}
    for key, field in settings.items():
        if key == "activation":
            values[key] = choice("model", model, key, ACTIVATIONS)
        elif str(field.type).startswith("tuple"):
            # No hidden layers is a valid net (softmax regression on the features).
            values[key] = positive_ints("model", model, key, allow_empty=key == "n_hidden")
        else:
            values[key] = positive_int("model", model, key)
    return spec_class(**values)


def prior_family(prior: Mapping) -> FixedNormal | HierarchicalNormal:
    """The prior family callable from ``conf/prior/*.yaml``."""
    family = choice("prior", prior, "family", tuple(PRIOR_FAMILIES))
    if family == "hier":
        noncentred = prior.get("noncentred")
        if not isinstance(noncentred, bool):
            raise _fail("prior", prior, "noncentred", f"must be true or false, got {noncentred!r}")
        return HierarchicalNormal(
            scale_sigma=positive_float("prior", prior, "scale_sigma"), noncentred=noncentred
        )
    return FixedNormal(sigma=positive_float("prior", prior, "sigma"))


def advi_settings(inference: Mapping) -> AdviSettings:
    """Validated :class:`~bnn.inference.settings.AdviSettings` from ``conf/inference/*.yaml``."""
    group = "inference"
    method = choice(group, inference, "method", METHODS)
    known = {f.name for f in fields(AdviSettings)}
    unknown = sorted(set(inference) - known)
    if unknown:
        raise _fail(group, inference, unknown[0], "is not a known setting")
    settings = AdviSettings(
        method=method,
        engine=choice(group, inference, "engine", ENGINES),
        n_iter=positive_int(group, inference, "n_iter"),
        batch_size=positive_int(group, inference, "batch_size"),
        optimizer=choice(group, inference, "optimizer", OPTIMIZER_NAMES),
        learning_rate=positive_float(group, inference, "learning_rate"),
        lr_decay=choice(group, inference, "lr_decay", LR_DECAYS),
        lr_final_fraction=fraction(group, inference, "lr_final_fraction"),
        float_dtype=choice(group, inference, "float_dtype", FLOAT_DTYPES),
        init_means=choice(group, inference, "init_means", INIT_SCHEMES),
        init_scale=positive_float(group, inference, "init_scale"),
        start_sigma=positive_float(group, inference, "start_sigma"),
        elbo_log_points=positive_int(group, inference, "elbo_log_points"),
        validate_every=positive_int(group, inference, "validate_every"),
    )
    if settings.engine != "pymc" and method != "lrt" and settings.optimizer != "adam":
        raise _fail(
            group,
            inference,
            "optimizer",
            f"must be adam with inference.engine={settings.engine} (its update is Adam's), got "
            f"{settings.optimizer!r}; set inference.engine=pymc for PyMC's other optimizers",
        )
    return settings


def predictive_settings(predictive: Mapping) -> dict:
    """``draws`` and ``chunk_draws``, positive integers; ``chunk_images``, one or ``auto``.

    ``auto`` becomes ``None``: blocks sized to the caches by the network's
    widest layer (:func:`bnn.predictive.forward.images_per_chunk`).
    """
    settings = {
        key: positive_int("predictive", predictive, key) for key in ("draws", "chunk_draws")
    }
    if predictive.get("chunk_images") == "auto":
        return settings | {"chunk_images": None}
    if isinstance(predictive.get("chunk_images"), int):
        return settings | {"chunk_images": positive_int("predictive", predictive, "chunk_images")}
    raise _fail(
        "predictive",
        predictive,
        "chunk_images",
        f"must be a positive integer or auto, got {predictive.get('chunk_images')!r}",
    )


def shift_settings(shift: Mapping) -> dict:
    """``angles`` (degrees, numbers), ``images`` and ``draws`` of the rotation test."""
    angles = shift.get("angles")
    if (
        not _is_sequence(angles)
        or not angles
        or not all(_is_number(a) for a in angles)
        or len(set(angles)) != len(angles)
    ):
        raise _fail("shift", shift, "angles", f"must be a list of distinct numbers, got {angles!r}")
    return {
        "angles": tuple(float(a) for a in angles),
        "images": positive_int("shift", shift, "images"),
        "draws": positive_int("shift", shift, "draws"),
    }


def ood_settings(ood: Mapping) -> dict:
    """``sets`` (names in :data:`bnn.data.shifted_inputs.OOD_SETS`), ``images`` and ``draws``."""
    sets = ood.get("sets")
    if not _is_sequence(sets) or not all(isinstance(n, str) and n in OOD_SETS for n in sets):
        valid = ", ".join(OOD_SETS)
        raise _fail("ood", ood, "sets", f"must be a list of names from {valid}; got {sets!r}")
    return {
        "sets": tuple(sets),
        "images": positive_int("ood", ood, "images"),
        "draws": positive_int("ood", ood, "draws"),
    }


def flag_settings(flag: Mapping) -> FlagSettings:
    """``score``, ``target_accuracy`` in (0, 1] and ``draws`` of the predict flag rule."""
    target = flag.get("target_accuracy")
    if not _is_number(target) or not 0 < target <= 1:
        raise _fail("flag", flag, "target_accuracy", f"must be in (0, 1], got {target!r}")
    return FlagSettings(
        score=choice("flag", flag, "score", SCORES),
        target_accuracy=float(target),
        draws=positive_int("flag", flag, "draws"),
    )


def fit_settings(cfg: DictConfig) -> dict:
    """:func:`bnn.pipeline.fit_stage.fit`'s settings from the composed config, all validated."""
    return {
        "spec": model_spec(_section(cfg, "model")),
        "prior": prior_family(_section(cfg, "prior")),
        "settings": advi_settings(_section(cfg, "inference")),
        "params": OmegaConf.to_container(cfg, resolve=True),
        "experiment": text("mlflow", _section(cfg, "mlflow"), "experiment"),
        "flag": flag_settings(_section(cfg, "flag")),
        "checkpoints": checkpoint_settings(_section(cfg, "checkpoint")),
    }


def checkpoint_settings(checkpoint: Mapping) -> CheckpointSettings:
    """Where a fit keeps its checkpoints and how often; a relative folder is under the repository.

    The root is :func:`bnn.pipeline.tracking.project_root`, so that a queued
    ``dvc exp run``, which runs in a temporary copy, keeps its checkpoints too.
    ``folder: null`` turns checkpoints off.
    """
    resume = checkpoint.get("resume")
    if not isinstance(resume, bool):
        raise _fail("checkpoint", checkpoint, "resume", f"must be true or false, got {resume!r}")
    folder = text("checkpoint", checkpoint, "folder", optional=True)
    return CheckpointSettings(
        folder=None if folder is None else tracking.project_root() / folder,
        every_steps=positive_int("checkpoint", checkpoint, "every_steps"),
        every_seconds=positive_float("checkpoint", checkpoint, "every_seconds"),
        resume=resume,
    )


def ensemble_settings(ensemble: Mapping) -> EnsembleSettings:
    """The ensemble's size, folder, and which member this fit is (None outside a member's sweep)."""
    members = positive_int("ensemble", ensemble, "members")
    member = ensemble.get("member")
    if member is not None:
        member = non_negative_int("ensemble", ensemble, "member", below=members)
    return EnsembleSettings(
        members=members, member=member, folder=Path(text("ensemble", ensemble, "folder"))
    )


def compare_settings(ensemble: Mapping) -> CompareSettings:
    """``ensemble.compare``: the ensemble folders, the sizes K, the draws of every member."""
    section = ensemble.get("compare")
    if not isinstance(section, Mapping):
        raise _fail("ensemble", ensemble, "compare", "must be a section (folders, sizes, ...)")
    folders = section.get("folders")
    if (
        not _is_sequence(folders)
        or not folders
        or not all(isinstance(f, str) and f.strip() for f in folders)
    ):
        raise _fail("ensemble", ensemble, "compare.folders", f"must list folders, got {folders!r}")
    return CompareSettings(
        folders=tuple(Path(folder) for folder in folders),
        sizes=positive_ints("ensemble.compare", section, "sizes"),
        draws_per_member=positive_int("ensemble.compare", section, "draws_per_member"),
    )


def sample_ppc_settings(cfg: DictConfig) -> dict:
    """:func:`bnn.pipeline.ppc_stage.sample_ppc`'s settings: draws, chunks, shift and OOD sets."""
    return predictive_settings(_section(cfg, "predictive")) | {
        "shift": shift_settings(_section(cfg, "shift")),
        "ood": ood_settings(_section(cfg, "ood")),
        "spec": model_spec(_section(cfg, "model")),
    }


def stage_paths(cfg: DictConfig) -> Paths:
    """The stages' folders from ``paths``, each a non-empty string."""
    section = _section(cfg, "paths")
    return Paths.from_mapping({f.name: text("paths", section, f.name) for f in fields(Paths)})


def tracking_uri(cfg: DictConfig) -> str:
    """Where MLflow runs go: ``mlflow.tracking_uri`` resolved by :func:`tracking.tracking_uri`."""
    section = _section(cfg, "mlflow")
    return tracking.tracking_uri(text("mlflow", section, "tracking_uri", optional=True))


def seed(cfg: DictConfig) -> int:
    """``seed``: an integer in [0, 2**32), as NumPy's and PyMC's seeding accept."""
    return non_negative_int("seed", cfg, "seed", below=2**32)


def data_settings(data: Mapping) -> dict:
    """``validation_size``, ``split`` (last, random), ``split_seed``, ``timeout_s`` of ``data``."""
    return {
        "validation_size": positive_int("data", data, "validation_size"),
        "split": choice("data", data, "split", SPLIT_STRATEGIES),
        "split_seed": non_negative_int("data", data, "split_seed", below=2**32),
        "timeout_s": positive_float("data", data, "timeout_s"),
    }


def all_settings(cfg: DictConfig) -> dict:
    """Every stage's settings, validated, so that a sweep or a DVC run fails before any work.

    ``fit.py`` calls this first: a bad ``predictive.draws`` then stops the
    fit at once, not the ``sample_ppc`` stage an hour later, and no MLflow
    run is created for a config that cannot finish.

    Returns
    -------
    dict
        ``seed``, ``data``, ``fit`` (:func:`fit_settings`), ``sample_ppc``
        (:func:`sample_ppc_settings`), ``paths`` and ``uri``.

    Raises
    ------
    ConfigError
        Naming the first bad key and the file that sets it: an unknown
        top-level key, an interpolation that does not resolve, or any value a
        stage would refuse.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", None) or "a value"
        raise ConfigError(f"{key} is missing (???); give it a value") from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "a value"
        reason = " ".join(str(error).splitlines()[0].split())
        raise ConfigError(f"{key} cannot be resolved ({reason}); check the ${{...}}") from None
    unknown = sorted(set(resolved) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a setting of the config (conf/config.yaml); "
            f"the settings are {', '.join(sorted(TOP_LEVEL_KEYS))}"
        )
    settings = {
        "seed": seed(cfg),
        "data": data_settings(_section(cfg, "data")),
        "fit": fit_settings(cfg),
        "sample_ppc": sample_ppc_settings(cfg),
        "paths": stage_paths(cfg),
        "uri": tracking_uri(cfg),
        "ensemble": ensemble_settings(_section(cfg, "ensemble")),
    }
    text("preset", cfg, "preset")
    return settings


def check_against_data(settings: AdviSettings, paths: Paths) -> None:
    """Refuse settings the training data cannot meet, reading only the split's header.

    Call it before the fit's MLflow run is created: it reads the size of
    ``processed/train.npz`` from its ``labels`` header (no arrays loaded).

    Raises
    ------
    ConfigError
        If ``inference.batch_size`` is larger than the training set.
    DataError
        If ``train.npz`` is missing or corrupt.
    """
    n_train = split_size(paths.processed, "train")
    if settings.batch_size > n_train:
        raise ConfigError(
            f"inference.batch_size must be at most the training set's {n_train} images "
            f"({paths.processed / 'train.npz'}), got {settings.batch_size} "
            f"(conf/inference/{settings.method}.yaml); lower it"
        )


def _section(cfg: Mapping, group: str) -> Mapping:
    section = cfg.get(group)
    if not isinstance(section, Mapping | DictConfig):
        raise ConfigError(
            f"{group} must be a section of settings, got {section!r} ({_where(group, {})})"
        )
    return section


def check_evaluation_against_data(sample_ppc: Mapping, paths: Paths) -> None:
    """Refuse ``shift.images`` or ``ood.images`` beyond the test set (read from its header).

    ``sample_ppc`` is :func:`sample_ppc_settings`'s result. Does nothing while
    the test split does not exist yet (the fit does not need it).

    Raises
    ------
    ConfigError
        Naming the key, the test set's size and the file.
    """
    if not (paths.processed / "test.npz").is_file():
        return
    n_test = split_size(paths.processed, "test")
    for group in ("shift", "ood"):
        if sample_ppc[group]["images"] > n_test:
            raise ConfigError(
                f"{group}.images must be at most the test set's {n_test} images "
                f"({paths.processed / 'test.npz'}), got {sample_ppc[group]['images']} "
                "(conf/config.yaml); lower it"
            )
