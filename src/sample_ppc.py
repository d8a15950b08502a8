"""DVC stage `sample_ppc`: class probabilities and a sampled label per test image and draw."""

import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from bnn import config, posterior, predictive, tracking
from bnn.cli import user_errors_exit
from bnn.dataset import load_split


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    settings = config.predictive_settings(cfg.predictive)
    fitted, test = posterior.load(cfg.paths.models), load_split(cfg.paths.processed, "test")
    began = time.perf_counter()
    samples = predictive.sample_predictive(
        fitted,
        test.images,
        settings["draws"],
        np.random.default_rng(cfg.seed),
        chunk_draws=settings["chunk_draws"],
        chunk_images=settings["chunk_images"],
    )
    seconds = time.perf_counter() - began
    predictive.save(samples, test.labels, Path(cfg.paths.ppc) / "test.npz")
    with tracking.resumed_run(
        tracking.tracking_uri(cfg.mlflow.tracking_uri), fitted.meta["mlflow_run_id"]
    ) as run_id:
        if run_id:
            tracking.log_metrics({"ppc_seconds": seconds, "ppc_draws": settings["draws"]})
    print(f"sample_ppc: {settings['draws']} draws x {len(test)} images in {seconds:.1f} s")


if __name__ == "__main__":
    main()
