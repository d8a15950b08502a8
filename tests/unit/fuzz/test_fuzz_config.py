"""Any value for any key of every group: ``config.all_settings`` validates or raises ConfigError.

The real composed configs (default, conv, hier, map, the presets) are
changed one key at a time, or a whole section at once, to values of every
type: numbers with ``nan`` and ``inf``, strings (interpolations and ``???``
included), lists and mappings. ``data.files`` and ``data.sources`` are the
fetch stage's and left out.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from bnn.core.errors import ConfigError
from bnn.pipeline import config
from helpers_fuzz import FUZZ, count

ROOT = Path(__file__).resolve().parents[3]
VARIANTS = ([], ["model=conv", "prior=hier"], ["inference=map"], ["experiment=original"])
SKIPPED = ("data.files", "data.sources")

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["${seed}", "${nowhere}", "???", "auto", "adam", "dense", "entropy", "noise"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def leaf_keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if name.startswith(SKIPPED):
            continue
        keys.append(name)
        if isinstance(value, dict):
            keys += leaf_keys(value, f"{name}.")
    return keys


@pytest.fixture(scope="module")
def configs() -> list[dict]:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        composed = [compose("config", overrides=list(v)) for v in VARIANTS]
    return [OmegaConf.to_container(cfg) for cfg in composed]


def validate(values: dict) -> None:
    try:
        settings = config.all_settings(OmegaConf.create(values))
    except ConfigError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(settings["seed"], int) and not isinstance(settings["seed"], bool)
        assert settings["fit"]["settings"].learning_rate > 0
        assert settings["sample_ppc"]["draws"] >= 1


def set_key(values: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        values = values[part]
    values[last] = value


@FUZZ
@given(st.data(), st.integers(0, len(VARIANTS) - 1), VALUES)
def test_any_value_for_any_key(configs, data, variant, value):
    count("config key")
    values = copy.deepcopy(configs[variant])
    key = data.draw(st.sampled_from(leaf_keys(values)))
    set_key(values, key, value)
    validate(values)


@FUZZ
@given(st.data(), st.integers(0, len(VARIANTS) - 1))
def test_a_key_removed(configs, data, variant):
    count("config missing key")
    values = copy.deepcopy(configs[variant])
    key = data.draw(st.sampled_from(leaf_keys(values)))
    *parents, last = key.split(".")
    section = values
    for part in parents:
        section = section[part]
    del section[last]
    validate(values)


@FUZZ
@given(st.integers(0, len(VARIANTS) - 1), st.text(max_size=8), VALUES)
def test_an_extra_key_anywhere(configs, variant, name, value):
    count("config extra key")
    values = copy.deepcopy(configs[variant])
    group = sorted(values)[len(name) % len(values)]
    target = values[group] if isinstance(values[group], dict) else values
    target[name or "_"] = value
    validate(values)
