"""The comparison of ensembles (``src/compare_ensembles.py``): every ensemble at every size K."""

from __future__ import annotations

from bnn.core.errors import DataError
from bnn.data.dataset import load_split
from bnn.data.evaluation_sets import evaluation_sets
from bnn.pipeline.ensemble_stage import CompareSettings
from bnn.pipeline.paths import Paths
from bnn.predictive import ensemble
from bnn.reporting import ensembles


def compare(paths: Paths, settings: CompareSettings, predictive: dict, seed: int) -> list[dict]:
    """Score every ensemble of ``settings.folders`` at every size K; write ``metrics/ensembles.*``.

    ``predictive`` is :func:`bnn.pipeline.config.sample_ppc_settings`: the
    chunks, and the rotation and OOD sets, drawn from the same seeded streams
    as ``sample_ppc``'s. A folder without ``ensemble.json`` is skipped with a warning.
    """
    test = load_split(paths.processed, "test")
    sets = evaluation_sets(
        test, settings.draws_per_member, predictive["shift"], predictive["ood"], seed
    )
    rows = []
    for folder in settings.folders:
        if not ensemble.is_ensemble(folder):
            print(f"warning: {folder} holds no ensemble (no {ensemble.MANIFEST_FILE}); skipped")
            continue
        members = ensemble.load_ensemble(folder)
        predictives = ensembles.member_predictives(
            members,
            folder,
            sets,
            settings.draws_per_member,
            predictive["chunk_draws"],
            predictive["chunk_images"],
        )
        fits = ensembles.member_fits(folder, members.names)
        for k in (k for k in settings.sizes if k <= len(members)):
            row = ensembles.mixture_row(predictives, k, sets, members.meta, fits)
            rows.append(row)
            print(f"{ensembles.label(row)}: " + ensembles.headline(row))
    if not rows:
        raise DataError(
            f"none of {', '.join(map(str, settings.folders))} holds an ensemble; fit one with "
            "`python src/fit.py -m 'ensemble.member=range(5)' ensemble.members=5`"
        )
    ensembles.write(rows, paths.metrics)
    print(f"compare_ensembles: {len(rows)} rows in {paths.metrics / 'ensembles.json'}")
    return rows
