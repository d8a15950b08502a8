"""DVC stage `plots`: ELBO curve, confusion heatmap and chi-square distributions as PNGs."""

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from bnn import plots, posterior, reports, tracking
from bnn.cli import user_errors_exit


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    out = Path(cfg.paths.plots)
    elbo = reports.read_table(Path(cfg.paths.metrics) / "elbo.tsv")
    plots.plot_elbo(
        np.asarray(elbo["step"], int), np.asarray(elbo["elbo"], float), out / "elbo.png"
    )
    with np.load(Path(cfg.paths.ppc) / "test_scores.npz", allow_pickle=False) as scores:
        plots.plot_confusion(scores["confusion"], out / "confusion.png")
        correct = scores["correct"]
        plots.plot_chisquare(
            scores["chi2"][correct], scores["chi2"][~correct], out / "chisquare.png"
        )
    run_id = posterior.load_meta(cfg.paths.models)["mlflow_run_id"]
    with tracking.resumed_run(tracking.tracking_uri(cfg.mlflow.tracking_uri), run_id) as active:
        if active:
            tracking.log_artifacts(out, "plots")


if __name__ == "__main__":
    main()
