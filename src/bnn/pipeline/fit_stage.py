"""The ``fit_advi`` stage: fit, save the posterior and its flag rule, log the run to MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

from bnn.core import tables
from bnn.data.dataset import load_split
from bnn.evaluation import hyperpriors
from bnn.inference import validation
from bnn.inference.fitting import fit_posterior, posterior_mean_accuracy
from bnn.inference.settings import AdviSettings, FitResult, elbo_curve
from bnn.pipeline import tracking
from bnn.pipeline.paths import Paths
from bnn.predictive import posterior
from bnn.serving import flag_rule, pyfunc_model

DEFAULT_FLAG = flag_rule.FlagSettings()


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
    flag: flag_rule.FlagSettings = DEFAULT_FLAG,
) -> str:
    """Fit, save the posterior, its flag rule and hyperpriors, log everything; return the run id.

    ``flag`` holds :func:`bnn.serving.flag_rule.rule_from_validation`'s ``score``,
    ``target_accuracy`` and ``draws``; the rule goes to ``models/flag.json``,
    and the model folder is logged as an MLflow pyfunc model.
    """
    train, valid = (load_split(paths.processed, name) for name in ("train", "valid"))
    name = variant_name(spec.name, params, settings)
    tags = (run_tags or {}) | {"mlflow.note.content": describe(spec, params, settings, seed)}
    with tracking.fit_run(uri, experiment, name, params, tags) as run_id:
        meta = {"mlflow_run_id": run_id, "prior": params["prior"], "seed": seed}
        monitor = validation.ValidationMonitor(valid, spec, settings.validate_every)
        fitted, result = fit_posterior(
            train, spec, prior, settings, seed, meta, callbacks=[monitor]
        )
        posterior.save(fitted, paths.models)
        rule = flag_rule.rule_from_validation(
            fitted, valid.images, valid.labels, seed=seed, **asdict(flag)
        )
        flag_rule.save(rule, paths.models)
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
        tables.write_json(paths.metrics / "fit.json", fit_metrics)
        tracking.log_metrics(fit_metrics)
        tracking.log_text_artifact(yaml.safe_dump(params, sort_keys=False), "config.yaml")
        summary = hyperpriors.summarise(fitted)
        if summary:
            hyperpriors.write_json(summary, paths.models / "hyperpriors.json")
            hyperpriors.log_to_mlflow(summary)
        pyfunc_model.log_model(paths.models, artifact_path=name)
        print(
            f"fit: {name} in {fit_seconds:.0f} s; validation accuracy at the mean "
            f"{valid_accuracy:.2%}; MLflow run {run_id[:8]}"
        )
    return run_id


def variant_name(network: str, params: dict, settings: AdviSettings) -> str:
    """What tells this fit from its neighbours in MLflow: ``dense-fixed-advi-6000`` (+ preset)."""
    name = f"{network}-{params['prior']['family']}-{settings.method}-{settings.n_iter}"
    preset = params.get("preset", "default")
    return name if preset == "default" else f"{name}-{preset}"


def describe(spec, params: dict, settings: AdviSettings, seed: int) -> str:
    """The run's description (MLflow's note): the network, prior and fit in one sentence."""
    prior = ", ".join(f"{k}={v}" for k, v in params["prior"].items())
    return (
        f"{spec.name} network {spec.to_dict()}, prior ({prior}), {settings.method} on the "
        f"{settings.engine} engine for {settings.n_iter} steps of {settings.batch_size} images, "
        f"{settings.float_dtype}, seed {seed}."
    )


def report_validation(run_id: str, rows, tsv_path: Path) -> None:
    """The validation curve as a DVC plot (by step and by fit seconds) and an MLflow series."""
    tables.write_table(tsv_path, ["step", "seconds", "accuracy"], rows)
    if rows:
        steps, _, scores = zip(*rows, strict=True)
        tracking.log_metric_series(run_id, "valid/accuracy", steps, scores)


def report_elbo(run_id: str, result: FitResult, tsv_path, n_points: int) -> None:
    """Write the window-averaged ELBO to ``tsv_path`` (a DVC plot) and to the MLflow run."""
    steps, elbo = elbo_curve(result.elbo_history, n_points)
    tables.write_table(tsv_path, ["step", "elbo"], zip(steps, elbo, strict=True))
    tracking.log_metric_series(run_id, "fit/elbo", steps, elbo)
