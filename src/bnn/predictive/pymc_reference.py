"""The posterior predictive the PyMC way, on the same approximation as ours.

``pm.sample_posterior_predictive`` over :func:`bnn.model.pymc_model.predictive_model` is
what a PyMC user would write. It is the reference :mod:`bnn.predictive.chunked` is
tested against (same label distribution) and the baseline ``make bench`` times.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import xarray as xr

from bnn.model.priors import prior_from_dict
from bnn.model.pymc_model import predictive_model
from bnn.predictive.posterior import Posterior

LOG_SUFFIX = "_log__"


def posterior_dataset(posterior: Posterior, n_draws: int, rng: np.random.Generator) -> xr.Dataset:
    """``n_draws`` draws of every model variable from the Gaussian factors, one chain.

    Factors live in PyMC's unconstrained space; a ``*_log__`` variable is drawn
    there and exponentiated back to the scale the model names without the suffix.
    """
    variables = {}
    for name, mean in posterior.means.items():
        draws = mean + posterior.stds[name] * rng.standard_normal((n_draws, *mean.shape))
        if name.endswith(LOG_SUFFIX):
            name, draws = name.removesuffix(LOG_SUFFIX), np.exp(draws)
        dims = ("chain", "draw", *(f"{name}_dim_{axis}" for axis in range(mean.ndim)))
        variables[name] = (dims, draws[None].astype(mean.dtype))
    return xr.Dataset(variables)


def sample_labels(posterior: Posterior, images: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """Labels sampled by ``pm.sample_posterior_predictive``, shape (draws, images)."""
    rng = np.random.default_rng(seed)
    prior = prior_from_dict(posterior.meta.prior)
    with pytensor.config.change_flags(floatX=posterior.meta.float_dtype):
        model = predictive_model(images, posterior.spec, prior)
        with model:
            result = pm.sample_posterior_predictive(
                posterior_dataset(posterior, n_draws, rng),
                var_names=["label"],
                random_seed=rng,
                progressbar=False,
            )
    return np.asarray(result.posterior_predictive["label"])[0]
