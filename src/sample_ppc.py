"""DVC stage `sample_ppc`: the posterior predictive of the test set, its rotations and OOD sets."""

import hydra
from omegaconf import DictConfig

from bnn import config, stages, tracking
from bnn.cli import user_errors_exit


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    stages.sample_ppc(
        stages.Paths.from_mapping(cfg.paths),
        seed=cfg.seed,
        uri=tracking.tracking_uri(cfg.mlflow.tracking_uri),
        **config.predictive_settings(cfg.predictive),
        shift=config.shift_settings(cfg.shift),
        ood=config.ood_settings(cfg.ood),
    )


if __name__ == "__main__":
    main()
