"""The ``fit_advi`` stage: fit, save the posterior and its flag rule, log the run to MLflow."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import yaml

import bnn
from bnn.core import tables
from bnn.core.atomic import atomic_folder, write_text
from bnn.core.errors import DataError
from bnn.core.signals import Interrupted
from bnn.data.dataset import load_split
from bnn.evaluation import hyperpriors
from bnn.inference import validation
from bnn.inference.checkpoint import Checkpoint, CheckpointSettings, fit_key
from bnn.inference.fitting import fit_posterior, posterior_mean_accuracy
from bnn.inference.settings import AdviSettings, FitResult, elbo_curve
from bnn.pipeline import tracking
from bnn.pipeline.paths import Paths
from bnn.predictive import posterior
from bnn.serving import flag_rule, pyfunc_model

DEFAULT_FLAG = flag_rule.FlagSettings()
# Beside the posterior: the key (:func:`bnn.inference.checkpoint.fit_key`) of the fit it came from.
FIT_KEY_FILE = "fit_key"
NO_CHECKPOINTS = CheckpointSettings(folder=None)


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
    flag: flag_rule.FlagSettings | None = DEFAULT_FLAG,
    checkpoints: CheckpointSettings = NO_CHECKPOINTS,
    run_name: str | None = None,
    keep_finished: bool = False,
) -> str:
    """Fit, save the posterior, its flag rule and hyperpriors, log everything; return the run id.

    ``flag`` holds :func:`bnn.serving.flag_rule.rule_from_validation`'s ``score``,
    ``target_accuracy`` and ``draws``; the rule goes to ``models/flag.json``,
    and the model folder is logged as an MLflow pyfunc model. ``flag=None``
    (an ensemble's member) skips both: the ensemble has its own rule and model. The model folder
    is replaced whole, once everything in it is written.

    With ``checkpoints`` (a folder), the fit saves its state as it goes and a
    rerun of the same fit (:func:`fit_identity`) resumes it, in the same MLflow
    run; the checkpoint is removed once the stage is done. ``run_name`` names
    the MLflow run; the default is :func:`variant_name`. With ``keep_finished``
    (an ensemble's member), a model folder that already holds this very fit
    (its ``fit_key`` file) is kept and not fitted again.
    """
    train, valid = (load_split(paths.processed, name) for name in ("train", "valid"))
    name = run_name or variant_name(spec.name, params, settings)
    key = fit_key(
        fit_identity(spec, params, settings, seed),
        [train.images, train.labels, valid.images, valid.labels],
    )
    if keep_finished and finished_fit(paths.models) == key:
        run_id = posterior.load(paths.models).meta.mlflow_run_id
        print(f"fit: {name} is already fitted in {paths.models} (same settings and data); kept")
        return run_id
    checkpoint = Checkpoint(checkpoints, key) if checkpoints.folder is not None else None
    saved = checkpoint.saved_meta() if checkpoint is not None else None
    continued = tracking.run_to_continue(
        uri, experiment, key, (saved or {}).get("extra", {}).get("mlflow_run_id")
    )
    tags = (run_tags or {}) | {
        "mlflow.note.content": describe(spec, params, settings, seed),
        tracking.FIT_KEY_TAG: key,
    }
    with tracking.fit_run(uri, experiment, name, params, tags, continued) as run_id:
        if checkpoint is not None:
            checkpoint.extra = {"mlflow_run_id": run_id}
        try:
            fit_seconds, valid_accuracy = fit_and_save(
                paths, train, valid, spec, prior, settings, seed, params, flag, run_id, checkpoint
            )
            write_text(paths.models / FIT_KEY_FILE, key + "\n")
        except Interrupted as stop:
            raise Interrupted(stop.signum, resume_hint(stop, checkpoint)) from None
        if checkpoint is not None:
            checkpoint.remove()
        step = checkpoint.resumed_step if checkpoint is not None else 0
        resumed = f", resumed at step {step:,}" if step else ""
        print(
            f"fit: {name} in {fit_seconds:.0f} s{resumed}; validation accuracy at the mean "
            f"{valid_accuracy:.2%}; MLflow run {run_id[:8]}"
        )
    return run_id


def fit_and_save(
    paths, train, valid, spec, prior, settings, seed, params, flag, run_id, checkpoint
) -> tuple[float, float]:
    """Fit, write the model folder and the fit's metrics, log them; return seconds and accuracy."""
    meta = {"mlflow_run_id": run_id, "prior": params["prior"], "seed": seed}
    monitor = validation.ValidationMonitor(valid, spec, settings.validate_every)
    fitted, result = fit_posterior(
        train, spec, prior, settings, seed, meta, callbacks=[monitor], checkpoint=checkpoint
    )
    summary = hyperpriors.summarise(fitted)
    with atomic_folder(paths.models) as models:
        posterior.save(fitted, models)
        if flag is not None:
            rule = flag_rule.rule_from_validation(
                fitted, valid.images, valid.labels, seed=seed, **asdict(flag)
            )
            flag_rule.save(rule, models)
        if summary:
            hyperpriors.write_json(summary, models / "hyperpriors.json")
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
    if summary:
        hyperpriors.log_to_mlflow(summary)
    if flag is not None:
        pyfunc_model.log_model(
            paths.models, artifact_path=variant_name(spec.name, params, settings)
        )
    return fit_seconds, valid_accuracy


def finished_fit(folder: Path) -> str | None:
    """The key of the fit whose result ``folder`` holds, or None (none, or a damaged one)."""
    try:
        key = (folder / FIT_KEY_FILE).read_text(encoding="utf-8").strip()
        posterior.load(folder)
    except (OSError, UnicodeDecodeError, DataError):
        return None
    return key


def fit_identity(spec, params: dict, settings: AdviSettings, seed: int) -> dict:
    """What decides a fit's result, for its checkpoint key: network, prior, settings, seed, code."""
    return {
        "model": spec.to_dict(),
        "prior": params["prior"],
        "inference": asdict(settings),
        "seed": seed,
        "bnn": bnn.__version__,
    }


def resume_hint(stop: Interrupted, checkpoint: Checkpoint | None) -> str:
    """The one line an interrupted fit ends with: where it stopped and how to go on."""
    if checkpoint is None:
        return f"{stop.detail or 'the fit stopped'}; checkpoints are off (checkpoint.folder=null)"
    return (
        f"{stop.detail or 'the fit stopped'}; rerun the same command to resume from "
        f"{checkpoint.shown_path} (checkpoint.resume=false starts afresh)"
    )


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
