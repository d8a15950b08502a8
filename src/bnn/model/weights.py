"""The network's weights from draws of the model's free variables, in NumPy.

A prior family may add free variables of its own (a hyperprior scale, a
non-centred ``raw`` variable); :func:`network_weights` maps their draws back to
``{layer}_W`` and ``{layer}_b``, so the forward passes need no knowledge of the
prior. No PyMC here: ``predict`` loads a posterior without importing it.
"""

from __future__ import annotations

import numpy as np

SCALE_SUFFIX = "_scale"
RAW_SUFFIX = "_raw"
# PyMC names the value variable of a positive variable after its log transform.
LOG_SUFFIX = "_log__"


def network_weights(draws: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    r"""The network's weights from draws of the model's value variables.

    Draws are keyed as PyMC names the value variables (``hidden1_W``,
    ``hidden1_W_raw``, ``hidden1_W_scale_log__``) and carry a leading draw
    axis. Every non-centred pair becomes its weight,

    .. math:: w = z \exp(\log \tau),

    with the scale of each draw broadcast over that draw's array; the
    ``*_scale_log__`` entries are dropped, and every other entry passes through
    unchanged, so the fixed prior's draws come back as they were.

    Parameters
    ----------
    draws : dict of ndarray
        Value-variable draws, each of shape (draws, ...); a scale has shape (draws,).

    Returns
    -------
    dict of ndarray
        ``{layer}_W`` and ``{layer}_b`` (plus any other non-scale entries).

    Raises
    ------
    KeyError
        If a ``{name}_raw`` entry has no ``{name}_scale_log__`` beside it.
    """
    weights = {}
    for key, value in draws.items():
        if key.endswith(SCALE_SUFFIX + LOG_SUFFIX):
            continue
        if not key.endswith(RAW_SUFFIX):
            weights[key] = value
            continue
        name = key.removesuffix(RAW_SUFFIX)
        scale_key = f"{name}{SCALE_SUFFIX}{LOG_SUFFIX}"
        if scale_key not in draws:
            raise KeyError(
                f"{key} has no {scale_key} beside it; pass every value variable of the "
                "non-centred model"
            )
        log_scale = np.asarray(draws[scale_key])
        scale = np.exp(log_scale).reshape(log_scale.shape + (1,) * (value.ndim - log_scale.ndim))
        weights[name] = value * scale
    return weights
