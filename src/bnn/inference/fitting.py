"""One fit, from training arrays to a saved posterior: the library side of `src/fit.py`."""

from __future__ import annotations

import numpy as np
import pytensor

from bnn.data.dataset import LabelledImages
from bnn.evaluation.metrics import accuracy
from bnn.inference.checkpoint import Checkpoint
from bnn.inference.fused import fit_fused
from bnn.inference.jax_engine import fit_jax
from bnn.inference.local_reparam import fit_local_reparam
from bnn.inference.pymc_engine import fit_advi
from bnn.inference.settings import AdviSettings, FitResult
from bnn.model.priors import PriorFamily
from bnn.model.pymc_model import bnn_model
from bnn.predictive.forward import class_probabilities
from bnn.predictive.posterior import Posterior, PosteriorMeta


def fit_posterior(
    train: LabelledImages,
    spec,
    prior: PriorFamily,
    settings: AdviSettings,
    seed: int,
    meta: dict,
    progressbar: bool = True,
    callbacks=(),
    checkpoint: Checkpoint | None = None,
) -> tuple[Posterior, FitResult]:
    """Build the model in the configured float dtype, fit it, return the posterior arrays.

    ``settings.method`` picks the fit: ``advi`` (PyMC's mean-field ADVI), ``map``
    (the same objective with the sds frozen near zero: a point estimate) or
    ``lrt`` (the same family and ELBO, with the local reparameterization
    gradient estimator of :mod:`bnn.inference.local_reparam`).

    Every engine returns the same :class:`~bnn.inference.settings.FitResult`.
    ``callbacks`` are fit callbacks, ``callback(factors, losses, step)``, such as
    :class:`bnn.inference.validation.ValidationMonitor`. A ``checkpoint``
    (:class:`~bnn.inference.checkpoint.Checkpoint`) resumes a stopped fit and
    saves this one as it goes, with every engine.
    """
    meta = PosteriorMeta(
        model=spec.to_dict(),
        float_dtype=settings.float_dtype,
        inference_method=settings.method,
        **meta,
    )
    if settings.method == "lrt":
        result = fit_local_reparam(
            train.images,
            train.labels,
            spec,
            prior,
            settings,
            seed,
            callbacks,
            progressbar,
            checkpoint=checkpoint,
        )
    else:
        with pytensor.config.change_flags(floatX=settings.float_dtype):
            model = bnn_model(train.images, train.labels, spec, prior, settings.batch_size)
            result = fit_model(model, settings, seed, progressbar, callbacks, checkpoint)
    posterior = Posterior(result.means, result.stds, meta)
    if settings.method == "map":
        # A point estimate: its draws are the point exactly, not to within MAP_SIGMA.
        posterior.stds = {name: np.zeros_like(std) for name, std in posterior.stds.items()}
    return posterior, result


def fit_model(
    model,
    settings: AdviSettings,
    seed: int,
    progressbar: bool = True,
    callbacks=(),
    checkpoint: Checkpoint | None = None,
) -> FitResult:
    """Fit ``model`` (method advi or map) with the configured step engine.

    ``settings.engine`` is ``fused`` (:func:`bnn.inference.fused.fit_fused`, the default),
    ``pymc`` (``pm.ADVI``'s own step, :func:`bnn.inference.pymc_engine.fit_advi`) or
    ``jax`` (the whole step in JAX, :func:`bnn.inference.jax_engine.fit_jax`).
    """
    engines = {"fused": fit_fused, "pymc": fit_advi, "jax": fit_jax}
    return engines[settings.engine](model, settings, seed, progressbar, callbacks, checkpoint)


def posterior_mean_accuracy(posterior: Posterior, data: LabelledImages) -> float:
    """Accuracy of the network at the posterior mean: a cheap check, not the evaluation."""
    probabilities = class_probabilities(data.images, posterior.spec, posterior.point())[0]
    return accuracy(probabilities.argmax(axis=1), np.asarray(data.labels))
