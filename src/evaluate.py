"""DVC stage `evaluate`: accuracy, NLL, calibration, error detection, shift and OOD scores."""

import hydra
from omegaconf import DictConfig

from bnn import stages, tracking
from bnn.cli import user_errors_exit


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    paths = stages.Paths.from_mapping(cfg.paths)
    stages.evaluate(paths, tracking.tracking_uri(cfg.mlflow.tracking_uri))


if __name__ == "__main__":
    main()
