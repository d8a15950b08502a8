"""DVC stage `sample_ppc`: the posterior predictive of the test set, its rotations and OOD sets."""

from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.core.threads import pin_blas_threads
from bnn.pipeline import config, ppc_stage
from bnn.pipeline.params_file import put_back_params


@hydra_entry.main(config_path="../conf", config_name="config", on_failure=put_back_params)
def main(cfg: DictConfig) -> None:
    pin_blas_threads()  # the predictive's matrix products depend on the thread count
    paths, settings = config.stage_paths(cfg), config.sample_ppc_settings(cfg)
    config.check_evaluation_against_data(settings, paths)
    ppc_stage.sample_ppc(paths, seed=config.seed(cfg), uri=config.tracking_uri(cfg), **settings)


if __name__ == "__main__":
    main()
