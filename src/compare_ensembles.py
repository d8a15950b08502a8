"""Single posteriors against ensembles of posteriors and of MAP fits: ``metrics/ensembles.*``.

Reads the ensembles named in ``ensemble.compare.folders`` (each assembled by its
sweep, ``python src/fit.py -m 'ensemble.member=range(K)' ...``), scores the
mixture of the first K members for every K in ``ensemble.compare.sizes`` on the
test set, the rotations and the OOD sets of ``conf/config.yaml``, and writes
``ensembles.json``, ``ensembles.md`` and the figures into ``paths.metrics``
(:mod:`bnn.reporting.ensembles`). A folder that holds no ensemble yet is skipped
with a warning, so the report can be made while other ensembles are still fitting.
"""

from omegaconf import DictConfig

from bnn.core import hydra_entry


@hydra_entry.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from bnn.core.threads import pin_blas_threads
    from bnn.pipeline import compare_stage, config

    pin_blas_threads()
    checked = config.all_settings(cfg)
    compare = config.compare_settings(cfg.ensemble)
    compare_stage.compare(checked["paths"], compare, checked["sample_ppc"], checked["seed"])


if __name__ == "__main__":
    main()
