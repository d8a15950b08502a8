"""The ``plots`` stage: every figure of a run, from its metrics tables and per-image scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bnn.core import tables
from bnn.core.errors import DataError
from bnn.evaluation import hyperpriors
from bnn.pipeline import artifacts, tracking
from bnn.pipeline.paths import Paths
from bnn.predictive import ensemble, posterior
from bnn.reporting import plots, uncertainty_plots
from bnn.reporting.metric_files import read_reliability

HYPERPRIOR_DRAWS = 2000


def plot(paths: Paths, uri: str, seed: int = 0) -> None:
    """Every figure of the run, from the metrics tables and per-image scores.

    ELBO, confusion and chi-square as in 2016; the reliability diagram,
    selective prediction, the rotation curve and the OOD histograms; and the
    hyperprior posteriors when there are any. An ensemble's ELBO figure is
    its first member's fit.
    """
    # First: no figure is drawn from a stale or damaged file.
    scores = load_scores(paths)
    (steps, values), reliability, (coverage, selective), shift = read_metric_tables(paths)
    plots.plot_elbo(steps, values, paths.plots / "elbo.png")
    plots.plot_confusion(scores["confusion"], paths.plots / "confusion.png")
    chi2, correct = scores["chi2"], scores["correct"]
    plots.plot_chisquare(chi2[correct], chi2[~correct], paths.plots / "chisquare.png")
    label = run_label(paths)
    uncertainty_plots.plot_reliability({label: reliability}, paths.plots / "reliability.png")
    uncertainty_plots.plot_selective(
        {k.removeprefix("accuracy_"): (coverage, v) for k, v in selective.items()},
        paths.plots / "selective.png",
    )
    uncertainty_plots.plot_shift({label: shift}, paths.plots / "shift.png")
    ood_sets = sorted({key.split("/")[1] for key in scores if key.startswith("ood/")})
    for score in ("entropy", "mutual_info"):
        by_set = {"MNIST test": scores[score]} | {
            name: scores[f"ood/{name}/{score}"] for name in ood_sets
        }
        uncertainty_plots.plot_ood(by_set, paths.plots / f"ood_{score}.png", score_name=score)
    fitted = ensemble.load_model(paths.models)
    if isinstance(fitted, posterior.Posterior) and hyperpriors.scale_names(fitted):
        draws = hyperpriors.draws(fitted, HYPERPRIOR_DRAWS, np.random.default_rng(seed))
        hyperpriors.plot(draws, paths.plots / "hyperpriors.png")
    with tracking.resumed_run(uri, fitted.meta.mlflow_run_id) as active:
        if active:
            tracking.log_artifacts(paths.plots, "plots")


# Each table the figures read, and the stage that writes it.
TABLE_STAGES = {
    "elbo.tsv": "fit_advi",
    "reliability.tsv": "evaluate",
    "selective.tsv": "evaluate",
    "shift.tsv": "evaluate",
}


def read_metric_tables(paths: Paths) -> tuple:
    """The ELBO curve, reliability bins, selective and shift curves, as arrays.

    Raises
    ------
    DataError
        Naming a table that is missing, damaged or lacks a column, and the
        command that rebuilds it.
    """
    name = ""
    folder = paths.metrics
    try:
        name = "elbo.tsv"
        elbo = tables.read_table(elbo_table(paths))
        curve = np.asarray(elbo["step"], int), np.asarray(elbo["elbo"], float)
        name = "reliability.tsv"
        reliability = read_reliability(paths.metrics / name)
        name = "selective.tsv"
        selective = tables.read_table(paths.metrics / name)
        coverage = np.asarray(selective.pop("coverage"), float)
        accuracy = {key: np.asarray(values, float) for key, values in selective.items()}
        name = "shift.tsv"
        shift = {
            key: np.asarray(values, float)
            for key, values in tables.read_table(paths.metrics / name).items()
        }
    except FileNotFoundError:
        path = elbo_table(paths) if name == "elbo.tsv" else folder / name
        raise DataError(
            f"{path} not found; rebuild it with `dvc repro {TABLE_STAGES[name]}`"
        ) from None
    except (ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError) as error:
        path = elbo_table(paths) if name == "elbo.tsv" else folder / name
        raise DataError(
            f"{path} is damaged ({type(error).__name__}: {error}); rebuild it "
            f"with `dvc repro -f {TABLE_STAGES[name]}`"
        ) from None
    return curve, reliability, (coverage, accuracy), shift


def elbo_table(paths: Paths):
    """The fit's ELBO curve: ``metrics/elbo.tsv``, or an ensemble's first member's."""
    if ensemble.is_ensemble(paths.models):
        first = ensemble.read_manifest(paths.models)[0][0]
        return paths.models / first / "elbo.tsv"
    return paths.metrics / "elbo.tsv"


def load_scores(paths: Paths) -> dict[str, np.ndarray]:
    """``ppc/test_scores.npz`` as evaluate wrote it, from the posterior in ``models/``.

    Raises
    ------
    DataError
        If the file is missing, corrupt, or from another posterior.
    """
    path = paths.ppc / "test_scores.npz"
    if not path.is_file():
        raise DataError(f"{path} not found; rebuild it with `{artifacts.EVALUATE}`")
    try:
        with open(path, "rb") as handle:
            stored = np.load(handle, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ValueError("a bare array, not an .npz archive")
            with stored:
                scores = {key: stored[key] for key in stored.files}
    except posterior.NPZ_READ_ERRORS as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(
            f"{path} is truncated or corrupt ({reason}); rebuild it with `{artifacts.EVALUATE}`"
        ) from None
    artifacts.check_stamp(path, scores, paths.models, artifacts.EVALUATE)
    needed = {"confusion", "chi2", "correct", "entropy", "mutual_info"}
    if not needed <= set(scores):
        raise DataError(
            f"{path} lacks {', '.join(sorted(needed - set(scores)))}; "
            f"rebuild it with `{artifacts.EVALUATE}`"
        )
    return scores


def run_label(paths: Paths) -> str:
    """A legend label for this run's curves: the inference method and network."""
    meta = ensemble.load_model_meta(paths.models)
    method = "MAP" if meta.inference_method == "map" else "BNN"
    return f"{method} ({meta.model['name']})"
