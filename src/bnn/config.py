"""Turning the composed Hydra config into plain, validated settings.

This is the edge where config becomes typed values: library functions receive
dataclasses and keyword arguments, never a ``DictConfig``. Every check names
the key and the file that sets it, so the message says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from bnn.errors import ConfigError
from bnn.inference import INIT_SCHEMES, LR_DECAYS, OPTIMIZERS, AdviSettings
from bnn.networks import DenseSpec
from bnn.priors import PRIOR_FAMILIES, FixedNormal

FLOAT_DTYPES = ("float32", "float64")


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


def model_spec(model: Mapping) -> DenseSpec:
    """The architecture from ``conf/model/*.yaml``."""
    choice("model", model, "name", ("dense",))
    hidden = model.get("n_hidden")
    if not hidden or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in hidden):
        raise _fail(
            "model", model, "n_hidden", f"must be a list of positive integers, got {hidden!r}"
        )
    return DenseSpec(
        n_hidden=tuple(hidden), activation=choice("model", model, "activation", ("tanh",))
    )


def prior_family(prior: Mapping):
    """The prior family callable from ``conf/prior/*.yaml``."""
    choice("prior", prior, "family", tuple(PRIOR_FAMILIES))
    return FixedNormal(sigma=positive_float("prior", prior, "sigma"))


def advi_settings(inference: Mapping) -> AdviSettings:
    """Validated :class:`~bnn.inference.AdviSettings` from ``conf/inference/*.yaml``."""
    group = "inference"
    choice(group, inference, "method", ("advi",))
    known = {f.name for f in fields(AdviSettings)} | {"method"}
    unknown = sorted(set(inference) - known)
    if unknown:
        raise _fail(group, inference, unknown[0], "is not a known setting")
    return AdviSettings(
        n_iter=positive_int(group, inference, "n_iter"),
        batch_size=positive_int(group, inference, "batch_size"),
        optimizer=choice(group, inference, "optimizer", tuple(OPTIMIZERS)),
        learning_rate=positive_float(group, inference, "learning_rate"),
        lr_decay=choice(group, inference, "lr_decay", LR_DECAYS),
        lr_final_fraction=fraction(group, inference, "lr_final_fraction"),
        float_dtype=choice(group, inference, "float_dtype", FLOAT_DTYPES),
        init_means=choice(group, inference, "init_means", INIT_SCHEMES),
        init_scale=positive_float(group, inference, "init_scale"),
        start_sigma=positive_float(group, inference, "start_sigma"),
        elbo_log_points=positive_int(group, inference, "elbo_log_points"),
    )


def predictive_settings(predictive: Mapping) -> dict:
    """``draws``, ``chunk_draws`` and ``chunk_images``, all positive integers."""
    return {
        key: positive_int("predictive", predictive, key)
        for key in ("draws", "chunk_draws", "chunk_images")
    }
