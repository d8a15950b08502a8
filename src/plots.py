"""DVC stage `plots`: ELBO, confusion, chi-square, calibration, shift, OOD (and hyperprior) PNGs."""

from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.pipeline import config, plots_stage


@hydra_entry.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    plots_stage.plot(config.stage_paths(cfg), config.tracking_uri(cfg), config.seed(cfg))


if __name__ == "__main__":
    main()
