"""The hyperprior scales as outputs: closed-form summaries, draws, the plot, JSON and MLflow."""

import json

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytensor
import pytest
from mlflow.tracking import MlflowClient

from bnn.evaluation import hyperpriors
from bnn.inference.pymc_engine import fit_advi
from bnn.inference.settings import AdviSettings
from bnn.model.priors import HierarchicalNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import DenseSpec
from bnn.pipeline import tracking
from bnn.predictive import posterior as posterior_io
from bnn.predictive.posterior import Posterior

SPEC = DenseSpec(n_hidden=(4,))
WEIGHTS = ["hidden1_W", "hidden1_b", "output_W", "output_b"]
SHAPES = {"hidden1_W": (784, 4), "hidden1_b": (4,), "output_W": (4, 10), "output_b": (10,)}
SUMMARY_KEYS = {"mean", "sd", "median", "low_94", "high_94", "log_mean", "log_sd"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def hier_posterior():
    """A non-centred posterior with distinct scale factors, in the model's (layer) order."""
    rng = np.random.default_rng(0)
    means, stds = {}, {}
    for name in WEIGHTS:
        means[f"{name}_raw"] = rng.normal(size=SHAPES[name])
        stds[f"{name}_raw"] = np.full(SHAPES[name], 0.1)
        means[f"{name}_scale_log__"] = np.asarray(rng.normal(-1.0, 0.5))
        stds[f"{name}_scale_log__"] = np.asarray(rng.uniform(0.1, 0.4))
    return Posterior(means, stds, meta={"model": SPEC.to_dict()})


def test_scale_names_are_in_layer_order(hier_posterior):
    assert hyperpriors.scale_names(hier_posterior) == [f"{n}_scale_log__" for n in WEIGHTS]


def test_a_fixed_prior_posterior_has_no_scales():
    fixed = Posterior({"output_b": np.zeros(10)}, {"output_b": np.ones(10)})
    assert hyperpriors.scale_names(fixed) == []
    assert hyperpriors.summarise(fixed) == {}
    assert hyperpriors.draws(fixed, 10, np.random.default_rng(0)) == {}


def test_summary_matches_monte_carlo_draws(hier_posterior):
    summary = hyperpriors.summarise(hier_posterior)
    n_draws = 400_000
    draws = hyperpriors.draws(hier_posterior, n_draws, np.random.default_rng(1))
    assert list(summary) == list(draws) == WEIGHTS
    for name in WEIGHTS:
        values = draws[name]
        assert values.shape == (n_draws,)
        stats = summary[name]
        assert set(stats) == SUMMARY_KEYS
        assert all(type(value) is float for value in stats.values())
        # With log-sd <= 0.4, 400k draws estimate these to well under 1% (about 5 Monte-Carlo
        # standard errors); the quantiles are checked as coverage of the interval.
        np.testing.assert_allclose(values.mean(), stats["mean"], rtol=3e-3)
        np.testing.assert_allclose(values.std(), stats["sd"], rtol=1e-2)
        np.testing.assert_allclose(np.median(values), stats["median"], rtol=3e-3)
        inside = np.mean((values >= stats["low_94"]) & (values <= stats["high_94"]))
        np.testing.assert_allclose(inside, 0.94, atol=2e-3)
        np.testing.assert_allclose(np.mean(values < stats["low_94"]), 0.03, atol=1.5e-3)
        assert stats["log_mean"] == float(hier_posterior.means[f"{name}_scale_log__"])


def test_summary_is_the_log_normal_closed_form():
    posterior = Posterior({"w_scale_log__": np.asarray(0.0)}, {"w_scale_log__": np.asarray(1.0)})
    stats = hyperpriors.summarise(posterior)["w"]
    assert stats["median"] == 1.0
    np.testing.assert_allclose(stats["mean"], np.exp(0.5), rtol=1e-15)
    np.testing.assert_allclose(stats["sd"], np.sqrt((np.e - 1) * np.e), rtol=1e-15)
    np.testing.assert_allclose(
        [stats["low_94"], stats["high_94"]], np.exp([-1.880793608, 1.880793608]), rtol=1e-9
    )


def test_json_has_one_entry_per_weight_array(hier_posterior, tmp_path):
    path = tmp_path / "models" / "hyperpriors.json"
    hyperpriors.write_json(hyperpriors.summarise(hier_posterior), path)
    saved = json.loads(path.read_text())
    assert sorted(saved) == sorted(WEIGHTS)
    assert all(set(entry) == SUMMARY_KEYS for entry in saved.values())


def test_figure_has_a_density_and_a_trace_panel_per_scale(hier_posterior):
    draws = hyperpriors.draws(hier_posterior, 300, np.random.default_rng(2))
    fig = hyperpriors.figure(draws)
    try:
        assert len(fig.axes) == 2 * len(WEIGHTS)
        density_titles = [ax.get_title() for ax in fig.axes[0::2]]
        trace_labels = [ax.get_ylabel() for ax in fig.axes[1::2]]
        assert trace_labels == [f"{name}_scale" for name in WEIGHTS]
        for name, title in zip(WEIGHTS, density_titles, strict=True):
            assert title.startswith(f"{name}_scale: mean ")
        # The trace is the 300 draws in order.
        trace = fig.axes[1].get_lines()[0].get_ydata()
        np.testing.assert_allclose(trace, draws["hidden1_W"])
    finally:
        plt.close(fig)


def test_plot_writes_a_png_and_closes_its_figure(hier_posterior, tmp_path):
    draws = hyperpriors.draws(hier_posterior, 200, np.random.default_rng(3))
    path = tmp_path / "plots" / "hyperpriors.png"
    open_before = plt.get_fignums()
    hyperpriors.plot(draws, path)
    assert plt.get_fignums() == open_before
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 400
    assert [p.name for p in path.parent.iterdir()] == ["hyperpriors.png"]  # no temporary left


def test_plot_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match=r"prior\.family=hier"):
        hyperpriors.plot({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="1-D array"):
        hyperpriors.plot({"output_b": np.ones((2, 3))}, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_mlflow_gets_mean_and_sd_metrics_and_the_plot(hier_posterior, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = hyperpriors.summarise(hier_posterior)
    plot_path = tmp_path / "hyperpriors.png"
    hyperpriors.plot(hyperpriors.draws(hier_posterior, 100, np.random.default_rng(4)), plot_path)
    with tracking.fit_run(store, "tests", "dense-hier", {}) as run_id:
        hyperpriors.log_to_mlflow(summary, plot_path)
    client = MlflowClient(store)
    metrics = client.get_run(run_id).data.metrics
    assert metrics == {
        f"hyper/{name}_{stat}": summary[name][stat] for name in WEIGHTS for stat in ("mean", "sd")
    }
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/hyperpriors.png"]


def test_report_from_a_short_fit_survives_a_save_and_load(tmp_path):
    rng = np.random.default_rng(5)
    settings = AdviSettings(n_iter=30, batch_size=16, float_dtype="float64")
    with pytensor.config.change_flags(floatX="float64"):
        model = bnn_model(
            rng.random((48, 784)),
            rng.integers(0, 10, 48),
            SPEC,
            HierarchicalNormal(noncentred=True),
            batch_size=16,
        )
        result = fit_advi(model, settings, seed=0, progressbar=False)
    fitted = Posterior(result.means, result.stds, {"model": SPEC.to_dict()})
    posterior_io.save(fitted, tmp_path / "models")
    loaded = posterior_io.load(tmp_path / "models")

    summary = hyperpriors.report(
        loaded,
        tmp_path / "models" / "hyperpriors.json",
        tmp_path / "plots" / "hyperpriors.png",
        n_draws=50,
        rng=np.random.default_rng(6),
    )
    assert summary == hyperpriors.summarise(fitted)
    assert list(summary) == WEIGHTS
    assert all(stats["mean"] > 0 and stats["sd"] > 0 for stats in summary.values())
    assert json.loads((tmp_path / "models" / "hyperpriors.json").read_text()) == summary
    assert (tmp_path / "plots" / "hyperpriors.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_of_a_fixed_prior_writes_an_empty_summary_and_no_plot(tmp_path):
    fixed = Posterior({"output_b": np.zeros(10)}, {"output_b": np.ones(10)})
    summary = hyperpriors.report(
        fixed, tmp_path / "hyper.json", tmp_path / "hyper.png", 10, np.random.default_rng(0)
    )
    assert summary == {}
    assert json.loads((tmp_path / "hyper.json").read_text()) == {}
    assert not (tmp_path / "hyper.png").exists()
