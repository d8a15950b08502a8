"""DVC stage `fit_advi`: fit the BNN by minibatch ADVI, save the posterior, log to MLflow.

Run alone with Hydra overrides, e.g. ``python src/fit.py inference.n_iter=2000 prior.sigma=0.1``.
As a sweep, ``python src/fit.py -m model=dense,conv prior=fixed,hier``, every job runs
the whole chain (fit, posterior predictive, evaluation, plots) in its own folder,
as a child of one MLflow parent run (see :mod:`bnn.sweep`).
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bnn.cli import user_errors_exit

# bnn's other modules import PyTensor, so they are imported inside main(): a sweep
# job's callback first points PyTensor at a compile folder of the job's own process.


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from bnn import config, stages, sweep, tracking

    fit_settings = {
        "spec": config.model_spec(cfg.model),
        "prior": config.prior_family(cfg.prior),
        "settings": config.advi_settings(cfg.inference),
        "params": OmegaConf.to_container(cfg, resolve=True),
        "experiment": cfg.mlflow.experiment,
        "flag": config.flag_settings(cfg.flag),
    }
    paths, uri = (
        stages.Paths.from_mapping(cfg.paths),
        tracking.tracking_uri(cfg.mlflow.tracking_uri),
    )
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        stages.fit(paths, seed=cfg.seed, uri=uri, **fit_settings)
        return
    job_paths = paths.outputs_under(Path(HydraConfig.get().runtime.output_dir))
    fit_settings["run_tags"] = sweep.child_tags()
    predictive = config.predictive_settings(cfg.predictive) | {
        "shift": config.shift_settings(cfg.shift),
        "ood": config.ood_settings(cfg.ood),
    }
    stages.run_all(job_paths, fit_settings, predictive, cfg.seed, uri)


if __name__ == "__main__":
    main()
