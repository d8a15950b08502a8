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

from bnn import (
    evaluation,
    flagging,
    hyperpriors,
    plots,
    posterior,
    predictive,
    pyfunc_model,
    reports,
    shifted_inputs,
    tracking,
    uncertainty,
    uncertainty_plots,
    validation,
)
from bnn.atomic import atomic_path
from bnn.dataset import load_split
from bnn.fitting import fit_posterior, posterior_mean_accuracy, report_elbo
from bnn.inference import AdviSettings

HYPERPRIOR_DRAWS = 2000
DEFAULT_FLAG = {"score": "entropy", "target_accuracy": 0.995, "draws": 50}


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
    flag: dict | None = None,
) -> str:
    """Fit, save the posterior, its flag rule and hyperpriors, log everything; return the run id.

    ``flag`` holds :func:`bnn.flagging.rule_from_validation`'s ``score``,
    ``target_accuracy`` and ``draws``; the rule goes to ``models/flag.json``,
    and the model folder is logged as an MLflow pyfunc model.
    """
    train, valid = (load_split(paths.processed, name) for name in ("train", "valid"))
    run_name = f"{spec.name}-{params['prior']['family']}"
    with tracking.fit_run(uri, experiment, run_name, params, run_tags) as run_id:
        meta = {"mlflow_run_id": run_id, "prior": params["prior"], "seed": seed}
        monitor = validation.ValidationMonitor(valid, spec, settings.validate_every)
        fitted, result = fit_posterior(
            train, spec, prior, settings, seed, meta, callbacks=[monitor]
        )
        posterior.save(fitted, paths.models)
        rule = flagging.rule_from_validation(
            fitted, valid.images, valid.labels, seed=seed, **(flag or DEFAULT_FLAG)
        )
        flagging.save(rule, paths.models)
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
        pyfunc_model.log_model(paths.models)
        print(f"fit: {fit_seconds:.0f} s; validation accuracy at the mean {valid_accuracy:.4f}")
    return run_id


def report_validation(run_id: str, rows, tsv_path: Path) -> None:
    """The validation curve as a DVC plot (by step and by fit seconds) and an MLflow series."""
    reports.write_table(tsv_path, ["step", "seconds", "accuracy"], rows)
    if rows:
        steps, _, scores = zip(*rows, strict=True)
        tracking.log_metric_series(run_id, "valid/accuracy", steps, scores)


def sample_ppc(
    paths: Paths,
    draws: int,
    chunk_draws: int,
    chunk_images: int,
    seed: int,
    uri: str,
    shift: dict,
    ood: dict,
) -> float:
    """Posterior predictive of the test set, its rotations and the OOD sets; returns seconds.

    Writes ``ppc/test.npz``, ``ppc/shift.npz`` (one summary per angle) and
    ``ppc/ood.npz`` (one per set). Each set draws from its own seeded stream,
    so changing one leaves the others' numbers alone.
    """
    fitted, test = posterior.load(paths.models), load_split(paths.processed, "test")
    test_seed, shift_seed, ood_seed = np.random.SeedSequence(seed).spawn(3)

    def summarise(images, n_draws, stream):
        rng = np.random.default_rng(stream)
        return predictive.summarise_predictive(
            fitted, images, n_draws, rng, chunk_draws, chunk_images
        )

    began = time.perf_counter()
    summary = summarise(test.images, draws, test_seed)
    seconds = time.perf_counter() - began
    predictive.save(paths.ppc / "test.npz", {"test": summary}, labels=test.labels)

    subset = test.subset(slice(0, shift["images"]))
    streams = shift_seed.spawn(len(shift["angles"]))
    rotated = {
        f"{angle:g}": summarise(shifted_inputs.rotate(subset.images, angle), shift["draws"], stream)
        for angle, stream in zip(shift["angles"], streams, strict=True)
    }
    predictive.save(paths.ppc / "shift.npz", rotated, labels=subset.labels)

    digits = test.images[: ood["images"]]
    streams = ood_seed.spawn(len(ood["sets"]))
    ood_summaries = {}
    for name, stream in zip(ood["sets"], streams, strict=True):
        made, draw_stream = stream.spawn(2)
        images = shifted_inputs.ood_images(name, digits, np.random.default_rng(made))
        ood_summaries[name] = summarise(images, ood["draws"], draw_stream)
    predictive.save(paths.ppc / "ood.npz", ood_summaries)

    with tracking.resumed_run(uri, fitted.meta["mlflow_run_id"]) as active:
        if active:
            tracking.log_metrics({"ppc_seconds": seconds, "ppc_draws": draws})
    print(f"sample_ppc: {draws} draws x {len(test)} images in {seconds:.1f} s")
    return seconds


def evaluate(paths: Paths, uri: str) -> dict:
    """Scores of the test predictive, its calibration, the shift curve and the OOD AUROCs.

    Writes ``metrics.json``, the DVC plots ``predictions.csv``,
    ``reliability.tsv``, ``selective.tsv`` and ``shift.tsv``, and the
    per-image scores the plots stage draws (``ppc/test_scores.npz``).
    """
    summaries, extra = predictive.load(paths.ppc / "test.npz")
    summary, labels = summaries["test"], extra["labels"]
    result = evaluation.evaluate_test(summary, labels)
    shifted, shift_extra = predictive.load(paths.ppc / "shift.npz")
    shift_rows = evaluation.shift_rows(
        {float(angle): s for angle, s in shifted.items()}, shift_extra["labels"]
    )
    ood_summaries, _ = predictive.load(paths.ppc / "ood.npz")
    test_scores = evaluation.scores_of(summary)
    scores = result.metrics | evaluation.ood_metrics(test_scores, ood_summaries)

    reports.write_json(paths.metrics / "metrics.json", scores)
    rows = zip(labels, result.per_image["predicted"], strict=True)
    reports.write_table(paths.metrics / "predictions.csv", ["actual", "predicted"], rows, sep=",")
    write_reliability(result.reliability, paths.metrics / "reliability.tsv")
    write_selective(result.selective, paths.metrics / "selective.tsv")
    shift_columns = list(shift_rows[0])
    reports.write_table(
        paths.metrics / "shift.tsv",
        shift_columns,
        ([r[c] for c in shift_columns] for r in shift_rows),
    )
    ood_arrays = {
        f"ood/{name}/{score}": values
        for name, s in ood_summaries.items()
        for score, values in evaluation.scores_of(s).items()
    }
    with atomic_path(paths.ppc / "test_scores.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **result.per_image, **ood_arrays)

    with tracking.resumed_run(uri, posterior.load_meta(paths.models)["mlflow_run_id"]) as active:
        if active:
            tracking.log_metrics(scores)
            tracking.set_tags({"error_auroc_score": scores["error_auroc_score"]})
            for column in shift_columns[1:]:
                angles = [round(r["angle"]) for r in shift_rows]
                tracking.log_metric_series(
                    active, f"shift/{column}", angles, [r[column] for r in shift_rows]
                )
    print(", ".join(f"{key} {value:.4g}" for key, value in scores.items() if _is_number(value)))
    return scores


def write_reliability(bins: uncertainty.ReliabilityBins, path: Path) -> None:
    """The reliability diagram's filled bins as a DVC plot."""
    filled = bins.count > 0
    columns = ("lower", "upper", "count", "confidence", "accuracy")
    values = [getattr(bins, name)[filled] for name in columns]
    rows = zip(*(v.tolist() for v in values), strict=True)
    reports.write_table(path, ["bin_lower", "bin_upper", "count", "confidence", "accuracy"], rows)


def read_reliability(path: Path) -> uncertainty.ReliabilityBins:
    """What :func:`write_reliability` wrote."""
    table = reports.read_table(path)
    column = {name: np.asarray(values, float) for name, values in table.items()}
    return uncertainty.ReliabilityBins(
        lower=column["bin_lower"],
        upper=column["bin_upper"],
        count=column["count"].astype(np.int64),
        confidence=column["confidence"],
        accuracy=column["accuracy"],
    )


def write_selective(curves: dict, path: Path) -> None:
    """Accuracy vs coverage, one column per uncertainty score, as a DVC plot."""
    coverage = next(iter(curves.values()))[0]
    columns = ["coverage", *(f"accuracy_{name}" for name in curves)]
    rows = zip(coverage.tolist(), *(acc.tolist() for _, acc in curves.values()), strict=True)
    reports.write_table(path, columns, rows)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot(paths: Paths, uri: str, seed: int = 0) -> None:
    """Every figure of the run, from the metrics tables and per-image scores.

    ELBO, confusion and chi-square as in 2016; the reliability diagram,
    selective prediction, the rotation curve and the OOD histograms; and the
    hyperprior posteriors when there are any.
    """
    elbo = reports.read_table(paths.metrics / "elbo.tsv")
    steps, values = np.asarray(elbo["step"], int), np.asarray(elbo["elbo"], float)
    plots.plot_elbo(steps, values, paths.plots / "elbo.png")
    with np.load(paths.ppc / "test_scores.npz", allow_pickle=False) as stored:
        scores = {key: stored[key] for key in stored.files}
    plots.plot_confusion(scores["confusion"], paths.plots / "confusion.png")
    chi2, correct = scores["chi2"], scores["correct"]
    plots.plot_chisquare(chi2[correct], chi2[~correct], paths.plots / "chisquare.png")
    label = run_label(paths)
    uncertainty_plots.plot_reliability(
        {label: read_reliability(paths.metrics / "reliability.tsv")},
        paths.plots / "reliability.png",
    )
    selective = reports.read_table(paths.metrics / "selective.tsv")
    coverage = np.asarray(selective.pop("coverage"), float)
    uncertainty_plots.plot_selective(
        {
            k.removeprefix("accuracy_"): (coverage, np.asarray(v, float))
            for k, v in selective.items()
        },
        paths.plots / "selective.png",
    )
    shift = reports.read_table(paths.metrics / "shift.tsv")
    uncertainty_plots.plot_shift(
        {label: {k: np.asarray(v, float) for k, v in shift.items()}}, paths.plots / "shift.png"
    )
    ood_sets = sorted({key.split("/")[1] for key in scores if key.startswith("ood/")})
    for score in ("entropy", "mutual_info"):
        by_set = {"MNIST test": scores[score]} | {
            name: scores[f"ood/{name}/{score}"] for name in ood_sets
        }
        uncertainty_plots.plot_ood(by_set, paths.plots / f"ood_{score}.png", score_name=score)
    fitted = posterior.load(paths.models)
    if hyperpriors.scale_names(fitted):
        draws = hyperpriors.draws(fitted, HYPERPRIOR_DRAWS, np.random.default_rng(seed))
        hyperpriors.plot(draws, paths.plots / "hyperpriors.png")
    with tracking.resumed_run(uri, fitted.meta["mlflow_run_id"]) as active:
        if active:
            tracking.log_artifacts(paths.plots, "plots")


def run_label(paths: Paths) -> str:
    """A legend label for this run's curves: the inference method and network."""
    meta = posterior.load_meta(paths.models)
    method = "MAP" if meta.get("inference_method") == "map" else "BNN"
    return f"{method} ({meta['model']['name']})"


def run_all(paths: Paths, fit_kwargs: dict, predictive_kwargs: dict, seed: int, uri: str) -> dict:
    """Fit, posterior predictive, evaluation and plots in one process (a sweep job).

    ``predictive_kwargs`` are :func:`sample_ppc`'s settings: the draws and
    chunks, and the ``shift`` and ``ood`` settings.
    """
    fit(paths, seed=seed, uri=uri, **fit_kwargs)
    sample_ppc(paths, seed=seed, uri=uri, **predictive_kwargs)
    scores = evaluate(paths, uri)
    plot(paths, uri, seed)
    return scores
