"""The pipeline's stages as functions of plain values.

The DVC stage scripts in ``src/`` each call one of these; a Hydra multirun job
calls all four in turn, in its own output folder (see :mod:`bnn.sweep`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import yaml

from bnn import hyperpriors, metrics, plots, posterior, predictive, reports, tracking, validation
from bnn.atomic import atomic_path
from bnn.dataset import load_split
from bnn.fitting import fit_posterior, posterior_mean_accuracy, report_elbo
from bnn.inference import AdviSettings

HYPERPRIOR_DRAWS = 2000


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes (``paths`` in conf/config.yaml)."""

    raw: Path
    processed: Path
    models: Path
    ppc: Path
    metrics: Path
    plots: Path

    @classmethod
    def from_mapping(cls, values) -> Paths:
        return cls(**{f.name: Path(values[f.name]) for f in fields(cls)})

    def outputs_under(self, root: Path) -> Paths:
        """The same layout with every output folder moved under ``root``; inputs stay."""
        return replace(
            self,
            **{name: root / getattr(self, name) for name in ("models", "ppc", "metrics", "plots")},
        )


def fit(
    paths: Paths,
    spec,
    prior,
    settings: AdviSettings,
    seed: int,
    params: dict,
    uri: str,
    experiment: str,
    run_tags: dict | None = None,
) -> str:
    """Fit, save the posterior and its hyperpriors, log everything; return the MLflow run id."""
    train, valid = (load_split(paths.processed, name) for name in ("train", "valid"))
    run_name = f"{spec.name}-{params['prior']['family']}"
    with tracking.fit_run(uri, experiment, run_name, params, run_tags) as run_id:
        meta = {"mlflow_run_id": run_id, "prior": params["prior"], "seed": seed}
        monitor = validation.ValidationMonitor(valid, spec, settings.validate_every)
        fitted, result = fit_posterior(
            train, spec, prior, settings, seed, meta, callbacks=[monitor]
        )
        posterior.save(fitted, paths.models)
        report_elbo(run_id, result, paths.metrics / "elbo.tsv", settings.elbo_log_points)
        checks = monitor.curve(result.began)
        report_validation(run_id, checks, paths.metrics / "validation.tsv")
        valid_accuracy = posterior_mean_accuracy(fitted, valid)
        fit_seconds = result.seconds - monitor.own_seconds
        fit_metrics = {
            "fit_seconds": fit_seconds,
            "valid_accuracy_at_mean": valid_accuracy,
            **validation.time_to_accuracy(checks),
        }
        reports.write_json(paths.metrics / "fit.json", fit_metrics)
        tracking.log_metrics(fit_metrics)
        tracking.log_text_artifact(yaml.safe_dump(params, sort_keys=False), "config.yaml")
        summary = hyperpriors.summarise(fitted)
        if summary:
            hyperpriors.write_json(summary, paths.models / "hyperpriors.json")
            hyperpriors.log_to_mlflow(summary)
        print(f"fit: {fit_seconds:.0f} s; validation accuracy at the mean {valid_accuracy:.4f}")
    return run_id


def report_validation(run_id: str, rows, tsv_path: Path) -> None:
    """The validation curve as a DVC plot (by step and by fit seconds) and an MLflow series."""
    reports.write_table(tsv_path, ["step", "seconds", "accuracy"], rows)
    if rows:
        steps, _, scores = zip(*rows, strict=True)
        tracking.log_metric_series(run_id, "valid/accuracy", steps, scores)


def sample_ppc(
    paths: Paths, draws: int, chunk_draws: int, chunk_images: int, seed: int, uri: str
) -> float:
    """Posterior predictive of the test set, saved to ``ppc/test.npz``; returns seconds."""
    fitted, test = posterior.load(paths.models), load_split(paths.processed, "test")
    began = time.perf_counter()
    samples = predictive.sample_predictive(
        fitted, test.images, draws, np.random.default_rng(seed), chunk_draws, chunk_images
    )
    seconds = time.perf_counter() - began
    predictive.save(samples, test.labels, paths.ppc / "test.npz")
    with tracking.resumed_run(uri, fitted.meta["mlflow_run_id"]) as active:
        if active:
            tracking.log_metrics({"ppc_seconds": seconds, "ppc_draws": draws})
    print(f"sample_ppc: {draws} draws x {len(test)} images in {seconds:.1f} s")
    return seconds


def evaluate(paths: Paths, uri: str) -> dict:
    """Scores of the test predictive: metrics.json, predictions.csv and per-image scores."""
    samples, labels = predictive.load(paths.ppc / "test.npz")
    scores, per_image = metrics.evaluate(samples.sampled_labels, samples.mean_probabilities, labels)
    reports.write_json(paths.metrics / "metrics.json", scores)
    rows = zip(labels, per_image["predicted"], strict=True)
    reports.write_table(paths.metrics / "predictions.csv", ["actual", "predicted"], rows, sep=",")
    with atomic_path(paths.ppc / "test_scores.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **per_image)
    with tracking.resumed_run(uri, posterior.load_meta(paths.models)["mlflow_run_id"]) as active:
        if active:
            tracking.log_metrics(scores)
    print(", ".join(f"{key} {value:.4g}" for key, value in scores.items() if value is not None))
    return scores


def plot(paths: Paths, uri: str, seed: int = 0) -> None:
    """ELBO, confusion and chi-square PNGs, and the hyperprior posteriors when there are any."""
    elbo = reports.read_table(paths.metrics / "elbo.tsv")
    steps, values = np.asarray(elbo["step"], int), np.asarray(elbo["elbo"], float)
    plots.plot_elbo(steps, values, paths.plots / "elbo.png")
    with np.load(paths.ppc / "test_scores.npz", allow_pickle=False) as scores:
        plots.plot_confusion(scores["confusion"], paths.plots / "confusion.png")
        chi2, correct = scores["chi2"], scores["correct"]
    plots.plot_chisquare(chi2[correct], chi2[~correct], paths.plots / "chisquare.png")
    fitted = posterior.load(paths.models)
    if hyperpriors.scale_names(fitted):
        draws = hyperpriors.draws(fitted, HYPERPRIOR_DRAWS, np.random.default_rng(seed))
        hyperpriors.plot(draws, paths.plots / "hyperpriors.png")
    with tracking.resumed_run(uri, fitted.meta["mlflow_run_id"]) as active:
        if active:
            tracking.log_artifacts(paths.plots, "plots")


def run_all(paths: Paths, fit_kwargs: dict, predictive_kwargs: dict, seed: int, uri: str) -> dict:
    """Fit, posterior predictive, evaluation and plots in one process (a sweep job)."""
    fit(paths, seed=seed, uri=uri, **fit_kwargs)
    sample_ppc(paths, seed=seed, uri=uri, **predictive_kwargs)
    scores = evaluate(paths, uri)
    plot(paths, uri, seed)
    return scores
