"""DVC stage `fit_advi`: fit the BNN by minibatch ADVI, save the posterior, log to MLflow.

Run alone with Hydra overrides, e.g. ``python src/fit.py inference.n_iter=2000 prior.sigma=0.1``.
As a sweep, ``python src/fit.py -m model=dense,conv prior=fixed,hier``, every job runs
the whole chain (fit, posterior predictive, evaluation, plots: the functions the DVC
stages call) in its own folder, as a child of one MLflow parent run (:mod:`bnn.pipeline.sweep`).
An ensemble, ``python src/fit.py -m 'ensemble.member=range(5)' ensemble.members=5``,
fits one member per job into ``ensemble.folder`` (:mod:`bnn.pipeline.ensemble_stage`).
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bnn.core import hydra_entry
from bnn.pipeline.params_file import put_back_params

# The library imports PyTensor, so it is imported inside main(): a parallel sweep
# job's callback first points PyTensor at a compile folder of the job's own process.


@hydra_entry.main(config_path="../conf", config_name="config", on_failure=put_back_params)
def main(cfg: DictConfig) -> None:
    from bnn.core.threads import pin_blas_threads
    from bnn.pipeline import chain, config, ensemble_stage, fit_stage, sweep

    pin_blas_threads()  # after the imports that load OpenBLAS; results depend on its count
    # Every stage's settings, and the batch size against the data, before any work
    # and before an MLflow run exists: a sweep job runs them all, DVC runs them next.
    checked = config.all_settings(cfg)
    fit_settings, paths, uri, seed = (checked[k] for k in ("fit", "paths", "uri", "seed"))
    config.check_against_data(fit_settings["settings"], paths)
    config.check_evaluation_against_data(checked["sample_ppc"], paths)
    if checked["ensemble"].member is not None:
        # One member of an ensemble: its fit only; the sweep's end assembles them.
        fit_settings["run_tags"] = sweep.child_tags()
        ensemble_stage.fit_member(paths, checked["ensemble"], seed, uri, **fit_settings)
        return
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        fit_stage.fit(paths, seed=seed, uri=uri, **fit_settings)
        return
    job_paths = paths.outputs_under(Path(HydraConfig.get().runtime.output_dir))
    fit_settings["run_tags"] = sweep.child_tags()
    chain.run_all(job_paths, fit_settings, checked["sample_ppc"], seed, uri)


if __name__ == "__main__":
    main()
