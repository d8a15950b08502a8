"""DVC stage `evaluate`: accuracy, NLL, calibration, error detection, shift and OOD scores."""

from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.pipeline import config, evaluate_stage
from bnn.pipeline.params_file import put_back_params


@hydra_entry.main(config_path="../conf", config_name="config", on_failure=put_back_params)
def main(cfg: DictConfig) -> None:
    evaluate_stage.evaluate(config.stage_paths(cfg), config.tracking_uri(cfg))


if __name__ == "__main__":
    main()
