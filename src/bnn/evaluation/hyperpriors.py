r"""The posterior of the hyperprior scales, as outputs in their own right.

Under the hierarchical prior (:class:`bnn.model.priors.HierarchicalNormal`) every
weight array ``{layer}_W`` and bias ``{layer}_b`` has a scale
:math:`\tau = \exp(u)`. Mean-field ADVI fits a Gaussian to :math:`u`, the
value variable ``{name}_scale_log__``, so the scale's posterior is log-normal:

.. math::

    u \sim \mathcal{N}(\mu, s^2), \qquad \tau = e^{u}, \qquad
    \mathbb{E}[\tau] = e^{\mu + s^2/2}, \qquad
    \mathrm{sd}[\tau] = \mathbb{E}[\tau] \sqrt{e^{s^2} - 1}.

This module summarises those scales in closed form (JSON and MLflow metrics)
and draws them for a density and trace plot made with ArviZ. Everything is
keyed by the weight's name (``hidden1_W``); a posterior without scales (the
fixed prior) has nothing to summarise.
"""

from __future__ import annotations

import math
import os
from statistics import NormalDist

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from arviz_base import from_dict
from arviz_plots import plot_trace_dist
from matplotlib.figure import Figure

from bnn.core import tables
from bnn.core.atomic import atomic_path
from bnn.model.weights import LOG_SUFFIX, SCALE_SUFFIX
from bnn.predictive.posterior import Posterior

DPI = 120
INTERVAL_PROBABILITY = 0.94
_SCALE_VALUE_SUFFIX = SCALE_SUFFIX + LOG_SUFFIX


def scale_names(posterior: Posterior) -> list[str]:
    """The ``*_scale_log__`` value variables of ``posterior``, in layer order.

    That is the order in which they were saved: the model's order of free
    variables, in which each layer asks the prior for ``W`` and then ``b``,
    layer after layer. Relying on it, rather than on the architecture's layer
    names, keeps this module independent of the architecture.
    """
    return [name for name in posterior.means if name.endswith(_SCALE_VALUE_SUFFIX)]


def weight_name(scale_name: str) -> str:
    """``hidden1_W_scale_log__`` -> ``hidden1_W``: the array the scale belongs to."""
    return scale_name.removesuffix(_SCALE_VALUE_SUFFIX)


def summarise(posterior: Posterior) -> dict[str, dict[str, float]]:
    r"""Closed-form posterior summaries of every scale, keyed by weight name.

    With :math:`\mu, s` the mean and sd of the Gaussian factor on
    :math:`\log\tau`, the quantiles of :math:`\tau` are those of the Gaussian,
    exponentiated:

    .. math::

        \mathrm{median}[\tau] = e^{\mu}, \qquad
        q_p[\tau] = e^{\mu + s\,\Phi^{-1}(p)} .

    Parameters
    ----------
    posterior : Posterior
        A fitted posterior; one without scales gives an empty dict.

    Returns
    -------
    dict of str to dict of float
        For each weight name (``hidden1_W``, ...): ``mean``, ``sd`` and
        ``median`` of the scale, ``low_94`` and ``high_94`` (the equal-tailed
        94% interval, the 3% and 97% quantiles), and ``log_mean`` and
        ``log_sd`` (:math:`\mu` and :math:`s`). Plain floats, ready for JSON.
    """
    tail = NormalDist().inv_cdf(0.5 + INTERVAL_PROBABILITY / 2)
    summary = {}
    for name in scale_names(posterior):
        mu = float(posterior.means[name])
        s = float(posterior.stds[name])
        mean = math.exp(mu + s**2 / 2)
        summary[weight_name(name)] = {
            "mean": mean,
            "sd": mean * math.sqrt(math.expm1(s**2)),
            "median": math.exp(mu),
            "low_94": math.exp(mu - tail * s),
            "high_94": math.exp(mu + tail * s),
            "log_mean": mu,
            "log_sd": s,
        }
    return summary


def draws(posterior: Posterior, n_draws: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n_draws`` independent draws of every scale from the approximation, keyed by weight name.

    Each is ``exp`` of a draw of the Gaussian factor on the log scale, shape (n_draws,).
    """
    return {
        weight_name(name): np.exp(
            float(posterior.means[name])
            + float(posterior.stds[name]) * rng.standard_normal(n_draws)
        )
        for name in scale_names(posterior)
    }


def figure(scale_draws: dict[str, np.ndarray]) -> Figure:
    """Density and trace of every scale, one row per weight array, drawn by ArviZ.

    The left panel of a row is the kernel density of the draws, titled with
    their mean and sd; the right panel is the draws in the order they were
    made. The draws of a variational posterior are independent, so the trace
    should look like white noise: it shows the spread, and any non-finite or
    extreme draw, at a glance. Panels are labelled with the PyMC name of the
    scale, ``{name}_scale``.

    The figure is made by :func:`matplotlib.pyplot.subplots` (inside ArviZ),
    so it is registered with pyplot: close it with
    :func:`matplotlib.pyplot.close` (as :func:`plot` does).

    Parameters
    ----------
    scale_draws : dict of str to ndarray
        Draws of each scale, shape (n_draws,), keyed by weight name (see :func:`draws`).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes per scale, row by row: density, then trace.

    Raises
    ------
    ValueError
        If there are no scales, or a draw array is not 1-D with at least two draws.
    """
    if not scale_draws:
        raise ValueError(
            "there are no hyperprior scales to plot; only the hierarchical prior "
            "(prior.family=hier) has them"
        )
    posterior = {}
    for name, values in scale_draws.items():
        values = np.asarray(values, dtype=float)
        if values.ndim != 1 or values.size < 2:
            raise ValueError(
                f"draws of {name} must be a 1-D array of at least 2 draws, got shape "
                f"{values.shape}; pass the output of bnn.evaluation.hyperpriors.draws"
            )
        # One chain: ArviZ's sample dimensions are (chain, draw).
        posterior[f"{name}{SCALE_SUFFIX}"] = values[None, :]
    tree = from_dict({"posterior": posterior})
    collection = plot_trace_dist(
        tree,
        backend="matplotlib",
        combined=True,
        visuals={"trace": {"linestyle": "-", "linewidth": 0.6}},
        figure_kwargs={"layout": "constrained"},
    )
    fig = collection.viz["figure"].item()
    n_draws = next(iter(posterior.values())).shape[1]
    density_axes, trace_axes = fig.axes[0::2], fig.axes[1::2]
    for ax, (name, values) in zip(density_axes, posterior.items(), strict=True):
        ax.set_title(f"{name}: mean {values.mean():.3g}, sd {values.std():.3g}", fontsize="medium")
        ax.set_xlabel("scale")
    for ax in trace_axes:
        ax.set_xlabel("draw")
    trace_axes[-1].set_xlabel(f"draw (independent draws from q, n = {n_draws:,})")
    fig.suptitle("Posterior of the prior scales: density and draws")
    return fig


def plot(scale_draws: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write :func:`figure` of ``scale_draws`` to ``path`` as a PNG, atomically, and close it."""
    fig = figure(scale_draws)
    try:
        with atomic_path(path) as tmp:
            # The temporary name ends in ".part", so the format cannot be inferred.
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)


def write_json(summary: dict[str, dict[str, float]], path: str | os.PathLike) -> None:
    """Write :func:`summarise`'s output as pretty JSON, atomically (saved beside the model)."""
    tables.write_json(path, summary)


def log_to_mlflow(
    summary: dict[str, dict[str, float]], plot_path: str | os.PathLike | None = None
) -> None:
    """Log each scale's posterior mean and sd to the active MLflow run, and the plot.

    Metrics are ``hyper/{name}_mean`` and ``hyper/{name}_sd`` (``hyper/hidden1_W_mean``);
    the plot, when given, goes under the run's ``plots`` artifacts.
    """
    metrics = {}
    for name, values in summary.items():
        metrics[f"hyper/{name}_mean"] = float(values["mean"])
        metrics[f"hyper/{name}_sd"] = float(values["sd"])
    if metrics:
        mlflow.log_metrics(metrics)
    if plot_path is not None:
        mlflow.log_artifact(str(plot_path), "plots")


def report(
    posterior: Posterior,
    json_path: str | os.PathLike,
    plot_path: str | os.PathLike,
    n_draws: int,
    rng: np.random.Generator,
) -> dict[str, dict[str, float]]:
    """Summarise, save and plot the scales of ``posterior``; return the summary.

    The summary is written to ``json_path`` even when it is empty (the fixed
    prior), so a pipeline can always declare the file; the plot is drawn only
    when there are scales.
    """
    summary = summarise(posterior)
    write_json(summary, json_path)
    if summary:
        plot(draws(posterior, n_draws, rng), plot_path)
    return summary
