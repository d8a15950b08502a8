"""DVC stage `fit_advi`: fit the BNN by minibatch ADVI, save the posterior, log to MLflow.

Run alone with Hydra overrides, e.g. ``python src/fit.py inference.n_iter=2000 prior.sigma=0.1``.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bnn import config, posterior, tracking
from bnn.cli import user_errors_exit
from bnn.dataset import load_split
from bnn.fitting import fit_posterior, posterior_mean_accuracy, report_elbo


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    settings = config.advi_settings(cfg.inference)
    train, valid = (load_split(cfg.paths.processed, name) for name in ("train", "valid"))
    uri = tracking.tracking_uri(cfg.mlflow.tracking_uri)
    params = OmegaConf.to_container(cfg, resolve=True)
    run_name = f"{spec.name}-{cfg.prior.family}"
    with tracking.fit_run(uri, cfg.mlflow.experiment, run_name, params) as run_id:
        meta = {"mlflow_run_id": run_id, "prior": params["prior"], "seed": cfg.seed}
        fitted, result = fit_posterior(train, spec, prior, settings, cfg.seed, meta)
        posterior.save(fitted, cfg.paths.models)
        elbo_path = Path(cfg.paths.metrics) / "elbo.tsv"
        report_elbo(run_id, result, elbo_path, settings.elbo_log_points)
        valid_accuracy = posterior_mean_accuracy(fitted, valid)
        tracking.log_metrics(
            {"fit_seconds": result.seconds, "valid_accuracy_at_mean": valid_accuracy}
        )
        tracking.log_text_artifact(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        print(f"fit: {result.seconds:.0f} s; validation accuracy at the mean {valid_accuracy:.4f}")


if __name__ == "__main__":
    main()
