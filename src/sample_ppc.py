"""DVC stage `sample_ppc`: the posterior predictive of the test set, its rotations and OOD sets."""

import hydra
from omegaconf import DictConfig

from bnn.core.cli import user_errors_exit
from bnn.core.threads import pin_blas_threads
from bnn.pipeline import config, ppc_stage


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    pin_blas_threads()  # the predictive's matrix products depend on the thread count
    ppc_stage.sample_ppc(
        config.stage_paths(cfg),
        seed=cfg.seed,
        uri=config.tracking_uri(cfg),
        **config.sample_ppc_settings(cfg),
    )


if __name__ == "__main__":
    main()
