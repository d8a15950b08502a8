"""DVC stage `plots`: ELBO, confusion, chi-square, calibration, shift, OOD (and hyperprior) PNGs."""

from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.pipeline import config, plots_stage
from bnn.pipeline.params_file import put_back_params


@hydra_entry.main(config_path="../conf", config_name="config", on_failure=put_back_params)
def main(cfg: DictConfig) -> None:
    plots_stage.plot(config.stage_paths(cfg), config.tracking_uri(cfg), config.seed(cfg))


if __name__ == "__main__":
    main()
