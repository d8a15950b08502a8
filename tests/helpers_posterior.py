"""A tiny saved model for the prediction tests: a random dense posterior and a flag rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnn.model.specs import ConvSpec, DenseSpec
from bnn.predictive import posterior as posterior_io
from bnn.predictive.posterior import Posterior
from bnn.serving import flag_rule
from bnn.serving.flag_rule import FlagRule

# About the median mutual information of the tiny posterior on random images: flags about half.
RULE = FlagRule("mutual_info", 0.023, 0.99, 0.995, 0.5)


def tiny_posterior(seed: int = 3, sd: float = 0.05, network: str = "dense") -> Posterior:
    """One hidden layer of 6 units, random means, every sd equal to ``sd``.

    ``network="conv"``: two conv blocks of 4 filters before it.
    """
    rng = np.random.default_rng(seed)
    if network == "conv":
        spec = ConvSpec(n_filters=(4, 4), n_hidden=(6,))
        means = {
            name: (rng.normal(size=shape) * 0.2).astype(np.float32)
            for name, shape in spec.weight_shapes().items()
        }
        stds = {name: np.full(mean.shape, sd, np.float32) for name, mean in means.items()}
        return Posterior(means, stds, meta={"model": spec.to_dict(), "float_dtype": "float32"})
    spec = DenseSpec(n_hidden=(6,))
    sizes = spec.layer_sizes
    means, stds = {}, {}
    for index, name in enumerate(spec.layer_names):
        for part, shape in (("W", (sizes[index], sizes[index + 1])), ("b", (sizes[index + 1],))):
            means[f"{name}_{part}"] = (rng.normal(size=shape) * 0.2).astype(np.float32)
            stds[f"{name}_{part}"] = np.full(shape, sd, np.float32)
    return Posterior(means, stds, meta={"model": spec.to_dict(), "float_dtype": "float32"})


def save_model(folder: Path, rule: FlagRule = RULE, sd: float = 0.05) -> Path:
    """Write ``posterior.npz``, ``posterior.json`` and ``flag.json`` into ``folder``."""
    posterior_io.save(tiny_posterior(sd=sd), folder)
    flag_rule.save(rule, folder)
    return folder
