"""One fit, from training arrays to a saved posterior: the library side of `src/fit.py`."""

from __future__ import annotations

import numpy as np
import pytensor

from bnn import reports, tracking
from bnn.dataset import LabelledImages
from bnn.forward import class_probabilities
from bnn.inference import AdviSettings, FitResult, elbo_curve, fit_advi
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
    """Build the model in the configured float dtype, fit ADVI, return the posterior arrays.

    ``callbacks`` are PyMC fit callbacks, such as :class:`bnn.validation.ValidationMonitor`.
    """
    with pytensor.config.change_flags(floatX=settings.float_dtype):
        model = bnn_model(train.images, train.labels, spec, prior, settings.batch_size)
        result = fit_advi(model, settings, seed, progressbar=progressbar, callbacks=callbacks)
        meta = meta | {"model": spec.to_dict(), "float_dtype": settings.float_dtype}
        posterior = from_approximation(result.approx, meta)
    return posterior, result


def posterior_mean_accuracy(posterior: Posterior, data: LabelledImages) -> float:
    """Accuracy of the network at the posterior mean: a cheap check, not the evaluation."""
    probabilities = class_probabilities(data.images, posterior.spec, posterior.point())[0]
    return accuracy(probabilities.argmax(axis=1), np.asarray(data.labels))


def report_elbo(run_id: str, result: FitResult, tsv_path, n_points: int) -> None:
    """Write the window-averaged ELBO to ``tsv_path`` (a DVC plot) and to the MLflow run."""
    steps, elbo = elbo_curve(result.elbo_history, n_points)
    reports.write_table(tsv_path, ["step", "elbo"], zip(steps, elbo, strict=True))
    tracking.log_metric_series(run_id, "fit/elbo", steps, elbo)
