"""One fit, from training arrays to a saved posterior: the library side of `src/fit.py`."""

from __future__ import annotations

import numpy as np
import pytensor

from bnn import reports, tracking
from bnn.dataset import LabelledImages
from bnn.forward import class_probabilities
from bnn.fused_advi import fit_fused
from bnn.inference import AdviSettings, FitResult, elbo_curve, fit_advi
from bnn.local_reparam import fit_local_reparam
from bnn.metrics import accuracy
from bnn.model import bnn_model
from bnn.posterior import Posterior, from_approximation
from bnn.priors import PriorFamily


def fit_posterior(
    train: LabelledImages,
    spec,
    prior: PriorFamily,
    settings: AdviSettings,
    seed: int,
    meta: dict,
    progressbar: bool = True,
    callbacks=(),
) -> tuple[Posterior, FitResult]:
    """Build the model in the configured float dtype, fit it, return the posterior arrays.

    ``settings.method`` picks the fit: ``advi`` (PyMC's mean-field ADVI), ``map``
    (the same objective with the sds frozen near zero: a point estimate) or
    ``lrt`` (the same family and ELBO, with the local reparameterization
    gradient estimator of :mod:`bnn.local_reparam`).

    ``callbacks`` are PyMC fit callbacks, such as :class:`bnn.validation.ValidationMonitor`.
    """
    meta = meta | {
        "model": spec.to_dict(),
        "float_dtype": settings.float_dtype,
        "inference_method": settings.method,
    }
    if settings.method == "lrt":
        means, stds, result = fit_local_reparam(
            train.images, train.labels, spec, prior, settings, seed, callbacks, progressbar
        )
        return Posterior(means, stds, meta), result
    with pytensor.config.change_flags(floatX=settings.float_dtype):
        model = bnn_model(train.images, train.labels, spec, prior, settings.batch_size)
        result = fit_model(model, settings, seed, progressbar=progressbar, callbacks=callbacks)
        posterior = from_approximation(result.approx, meta)
    if settings.method == "map":
        # A point estimate: its draws are the point exactly, not to within MAP_SIGMA.
        posterior.stds = {name: np.zeros_like(std) for name, std in posterior.stds.items()}
    return posterior, result


def fit_model(
    model, settings: AdviSettings, seed: int, progressbar: bool = True, callbacks=()
) -> FitResult:
    """Fit ``model`` (method advi or map) with the configured step engine.

    ``settings.engine`` is ``fused`` (:func:`bnn.fused_advi.fit_fused`, the default)
    or ``pymc`` (``pm.ADVI``'s own step, :func:`bnn.inference.fit_advi`).
    """
    if settings.engine == "fused":
        return fit_fused(model, settings, seed, progressbar=progressbar, callbacks=callbacks)
    return fit_advi(model, settings, seed, progressbar=progressbar, callbacks=callbacks)


def posterior_mean_accuracy(posterior: Posterior, data: LabelledImages) -> float:
    """Accuracy of the network at the posterior mean: a cheap check, not the evaluation."""
    probabilities = class_probabilities(data.images, posterior.spec, posterior.point())[0]
    return accuracy(probabilities.argmax(axis=1), np.asarray(data.labels))


def report_elbo(run_id: str, result: FitResult, tsv_path, n_points: int) -> None:
    """Write the window-averaged ELBO to ``tsv_path`` (a DVC plot) and to the MLflow run."""
    steps, elbo = elbo_curve(result.elbo_history, n_points)
    reports.write_table(tsv_path, ["step", "elbo"], zip(steps, elbo, strict=True))
    tracking.log_metric_series(run_id, "fit/elbo", steps, elbo)
