"""Turning the composed Hydra config into plain, validated settings.

This is the edge where config becomes typed values: library functions receive
dataclasses and keyword arguments, never a ``DictConfig``. Every check names
the key and the file that sets it, so the message says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from omegaconf import DictConfig, OmegaConf

from bnn.core.errors import ConfigError
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
from bnn.pipeline.paths import Paths
from bnn.serving.flag_rule import FlagSettings

FLOAT_DTYPES = ("float32", "float64")
ACTIVATIONS = ("tanh",)


CONFIG_GROUPS = ("data", "model", "prior", "inference")


def _where(group: str, section: Mapping) -> str:
    if group not in CONFIG_GROUPS:
        return "conf/config.yaml"
    option = section.get("name") or section.get("family") or section.get("method") or group
    return f"conf/{group}/{option}.yaml"


def _fail(group: str, section: Mapping, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{group}.{key} {problem} ({_where(group, section)})")


def positive_int(group: str, section: Mapping, key: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(group, section, key, f"must be a positive integer, got {value!r}")
    return value


def positive_float(group: str, section: Mapping, key: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise _fail(group, section, key, f"must be a positive number, got {value!r}")
    return float(value)


def fraction(group: str, section: Mapping, key: str) -> float:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _fail(group, section, key, f"must be a number in [0, 1], got {value!r}")
    return float(value)


def choice(group: str, section: Mapping, key: str, options) -> str:
    value = section.get(key)
    if value not in options:
        valid = ", ".join(options)
        raise _fail(group, section, key, f"must be one of {valid}; got {value!r}")
    return value


def positive_ints(group: str, section: Mapping, key: str, allow_empty: bool = False) -> tuple:
    values = section.get(key)
    if (values is None or (not values and not allow_empty)) or any(
        isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in values
    ):
        raise _fail(group, section, key, f"must be a list of positive integers, got {values!r}")
    return tuple(values)


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
    if settings.engine == "fused" and method != "lrt" and settings.optimizer != "adam":
        raise _fail(
            group,
            inference,
            "optimizer",
            f"must be adam with inference.engine=fused (its update is Adam's), got "
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
        not angles
        or any(isinstance(a, bool) or not isinstance(a, int | float) for a in angles)
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
    if sets is None or isinstance(sets, str) or any(name not in OOD_SETS for name in sets):
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
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
        raise _fail("flag", flag, "target_accuracy", f"must be in (0, 1], got {target!r}")
    return FlagSettings(
        score=choice("flag", flag, "score", SCORES),
        target_accuracy=float(target),
        draws=positive_int("flag", flag, "draws"),
    )


def fit_settings(cfg: DictConfig) -> dict:
    """:func:`bnn.pipeline.fit_stage.fit`'s settings from the composed config, all validated."""
    return {
        "spec": model_spec(cfg.model),
        "prior": prior_family(cfg.prior),
        "settings": advi_settings(cfg.inference),
        "params": OmegaConf.to_container(cfg, resolve=True),
        "experiment": cfg.mlflow.experiment,
        "flag": flag_settings(cfg.flag),
        "checkpoints": checkpoint_settings(cfg.checkpoint),
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
    folder = checkpoint.get("folder")
    if folder is not None and (not isinstance(folder, str) or not folder.strip()):
        raise _fail("checkpoint", checkpoint, "folder", f"must be a path or null, got {folder!r}")
    return CheckpointSettings(
        folder=None if folder is None else tracking.project_root() / folder,
        every_steps=positive_int("checkpoint", checkpoint, "every_steps"),
        every_seconds=positive_float("checkpoint", checkpoint, "every_seconds"),
        resume=resume,
    )


def sample_ppc_settings(cfg: DictConfig) -> dict:
    """:func:`bnn.pipeline.ppc_stage.sample_ppc`'s settings: draws, chunks, shift and OOD sets."""
    return predictive_settings(cfg.predictive) | {
        "shift": shift_settings(cfg.shift),
        "ood": ood_settings(cfg.ood),
    }


def stage_paths(cfg: DictConfig) -> Paths:
    """The stages' folders from ``paths``."""
    return Paths.from_mapping(cfg.paths)


def tracking_uri(cfg: DictConfig) -> str:
    """Where MLflow runs go: ``mlflow.tracking_uri`` resolved by :func:`tracking.tracking_uri`."""
    return tracking.tracking_uri(cfg.mlflow.tracking_uri)
