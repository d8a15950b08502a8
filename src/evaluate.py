"""DVC stage `evaluate`: accuracy, NLL, confusion and chi-square scores of the test predictive."""

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from bnn import metrics, posterior, predictive, reports, tracking
from bnn.atomic import atomic_path
from bnn.cli import user_errors_exit


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    samples, labels = predictive.load(Path(cfg.paths.ppc) / "test.npz")
    scores, per_image = metrics.evaluate(samples.sampled_labels, samples.mean_probabilities, labels)
    reports.write_json(Path(cfg.paths.metrics) / "metrics.json", scores)
    reports.write_table(
        Path(cfg.paths.metrics) / "predictions.csv",
        ["actual", "predicted"],
        zip(labels, per_image["predicted"], strict=True),
        sep=",",
    )
    with atomic_path(Path(cfg.paths.ppc) / "test_scores.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **per_image)
    run_id = posterior.load_meta(cfg.paths.models)["mlflow_run_id"]
    with tracking.resumed_run(tracking.tracking_uri(cfg.mlflow.tracking_uri), run_id) as active:
        if active:
            tracking.log_metrics(scores)
    print(", ".join(f"{key} {value:.4g}" for key, value in scores.items() if value is not None))


if __name__ == "__main__":
    main()
