"""Single posteriors, ensembles of K posteriors and ensembles of K MAP fits, side by side.

For each ensemble folder, every member's predictive of the evaluation sets
(test set, rotations, OOD sets: :func:`bnn.pipeline.ppc_stage.evaluation_sets`)
is drawn once, ``draws_per_member`` draws each, and kept per member
(``<folder>/predictive/member-<i>.npz``, reused while the member and the
settings are unchanged). The ensemble of the first K members is then the
:func:`~bnn.predictive.chunked.combine` of their summaries, exactly the mixture
predictive :func:`~bnn.predictive.chunked.summarise_predictive` draws for
``Ensemble.first(K)`` with K x ``draws_per_member`` draws. So every K of the
curve comes from the same members and the same draws, and K = 1 is a single
posterior (or a single MAP fit).

``python src/compare_ensembles.py`` writes ``metrics/ensembles.json`` (one
object per ensemble and K), ``metrics/ensembles.md``, and the figures
``metrics/ensembles_k.png`` (NLL and OOD AUROC against K) and
``metrics/ensembles_shift.png`` (the rotation curves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bnn.core import tables
from bnn.core.atomic import atomic_path, write_text
from bnn.core.errors import DataError
from bnn.data.evaluation_sets import EvaluationSets
from bnn.evaluation import scoring
from bnn.predictive import chunked, posterior
from bnn.predictive.chunked import PredictiveSummary, combine
from bnn.predictive.ensemble import Ensemble
from bnn.reporting import uncertainty_plots

CACHE_FOLDER = "predictive"
SETTINGS_KEY = "settings"
# Rotations at which a digit is no longer the digit it was trained as: the
# issue's "rotated-digit ECE" is the mean ECE over these angles.
FAR_ANGLES = (45.0, 180.0)
COLUMNS = (
    ("model", "model", "{}"),
    ("prior", "prior", "{}"),
    ("inference", "inference", "{}"),
    ("members", "K", "{}"),
    ("test_accuracy", "test accuracy", "{:.2%}"),
    ("test_nll", "test NLL", "{:.4f}"),
    ("test_ece", "test ECE", "{:.4f}"),
    ("test_brier", "test Brier", "{:.4f}"),
    ("error_auroc", "error AUROC", "{:.3f}"),
    ("ood_auroc_noise", "OOD AUROC noise", "{:.3f}"),
    ("ood_auroc_scrambled", "OOD AUROC scrambled", "{:.3f}"),
    ("rotated_ece", "ECE 45°-180°", "{:.4f}"),
    ("test_mean_mutual_info", "mean MI", "{:.4f}"),
    ("test_mean_member_disagreement", "of it, between members", "{:.4f}"),
)


@dataclass
class MemberPredictives:
    """One member's predictive summaries of every evaluation set, by the set's name."""

    test: PredictiveSummary
    shift: dict[str, PredictiveSummary]
    ood: dict[str, PredictiveSummary]

    def to_named(self) -> dict[str, PredictiveSummary]:
        named = {"test": self.test}
        named |= {f"shift/{name}": summary for name, summary in self.shift.items()}
        return named | {f"ood/{name}": summary for name, summary in self.ood.items()}

    @classmethod
    def from_named(cls, named: dict[str, PredictiveSummary]) -> MemberPredictives:
        def part(prefix: str) -> dict[str, PredictiveSummary]:
            return {
                name.removeprefix(prefix): value
                for name, value in named.items()
                if name.startswith(prefix)
            }

        return cls(test=named["test"], shift=part("shift/"), ood=part("ood/"))


def member_predictives(
    members: Ensemble,
    folder: Path,
    sets: EvaluationSets,
    draws_per_member: int,
    chunk_draws: int,
    chunk_images: int | None,
) -> list[MemberPredictives]:
    """Every member's summaries of ``sets``, each drawn from the member's share of the set's stream.

    Member ``i`` of a set draws with ``default_rng(stream).spawn(K)[i]``, as
    :func:`~bnn.predictive.chunked.summarise_predictive` does for the mixture.
    A member's summaries are saved to ``folder/predictive/`` as they are made
    and read back on a rerun if the member and ``settings`` are unchanged, so
    an interrupted comparison resumes at the member it stopped in.
    """
    named_sets = {"test": sets.test}
    named_sets |= {f"shift/{name}": one for name, one in sets.shift.items()}
    named_sets |= {f"ood/{name}": one for name, one in sets.ood.items()}
    rngs = {
        name: np.random.default_rng(one.stream).spawn(len(members))
        for name, one in named_sets.items()
    }
    settings = json.dumps(
        {
            "draws_per_member": draws_per_member,
            "sets": {
                name: [one.label, one.images.shape, one.stream.entropy]
                for name, one in named_sets.items()
            },
        },
        default=str,
    )
    results = []
    for index, (name, member) in enumerate(zip(members.names, members.members, strict=True)):
        cache = folder / CACHE_FOLDER / f"{name}.npz"
        stamp = posterior.fingerprint(folder / name) + "\n" + settings
        cached = _read_cache(cache, stamp)
        if cached is None:
            summaries = {
                set_name: chunked.summarise_predictive(
                    member,
                    one.images,
                    draws_per_member,
                    rngs[set_name][index],
                    chunk_draws,
                    chunk_images,
                    f"{folder.name} {name}: {one.label}",
                    True,
                )
                for set_name, one in named_sets.items()
            }
            chunked.save(cache, summaries, **{SETTINGS_KEY: np.array(stamp)})
            cached = summaries
        results.append(MemberPredictives.from_named(cached))
    return results


def _read_cache(path: Path, stamp: str) -> dict[str, PredictiveSummary] | None:
    """A member's saved summaries if they were drawn from this member with these settings."""
    if not path.is_file():
        return None
    try:
        summaries, extra = chunked.load(path)
    except DataError:
        return None  # damaged: draw again
    saved = extra.get(SETTINGS_KEY)
    return summaries if saved is not None and str(saved) == stamp else None


def mixture_row(
    predictives: list[MemberPredictives], k: int, sets: EvaluationSets, meta, fits: list[dict]
) -> dict:
    """The scores of the mixture of the first ``k`` members: one row of ``ensembles.json``."""
    first = predictives[:k]
    test = combine([p.test for p in first])
    evaluation = scoring.evaluate_test(test, sets.test_labels)
    shift = scoring.shift_rows(
        {float(a): combine([p.shift[a] for p in first]) for a in first[0].shift},
        sets.shift_labels,
    )
    ood = scoring.ood_metrics(
        scoring.scores_of(test),
        {name: combine([p.ood[name] for p in first]) for name in first[0].ood},
    )
    far = [row["ece"] for row in shift if FAR_ANGLES[0] <= row["angle"] <= FAR_ANGLES[1]]
    values = evaluation.metrics | ood
    fit_seconds = [fit.get("fit_seconds") for fit in fits[:k]]
    return {
        "model": meta.model["name"],
        "prior": (meta.prior or {}).get("family"),
        "inference": meta.inference_method,
        "members": k,
        **{
            key: values.get(key)
            for key in (
                "test_accuracy",
                "test_nll",
                "test_ece",
                "test_brier",
                "error_auroc",
                "ood_auroc_noise",
                "ood_auroc_scrambled",
            )
        },
        "rotated_ece": float(np.mean(far)) if far else None,
        "test_mean_mutual_info": values.get("test_mean_mutual_info"),
        "test_mean_member_disagreement": values.get("test_mean_member_disagreement"),
        "draws": test.n_draws,
        "fit_seconds_per_member": _mean(fit_seconds),
        "fit_seconds_total": float(sum(fit_seconds)) if None not in fit_seconds else None,
        "valid_accuracy_at_mean_per_member": _mean(
            [fit.get("valid_accuracy_at_mean") for fit in fits[:k]]
        ),
        "shift": {f"{row['angle']:g}": row for row in shift},
    }


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values and None not in values else None


def headline(row: dict) -> str:
    """A row's numbers in one console line."""
    return ", ".join(
        f"{title} {'n/a' if row.get(key) is None else fmt.format(row[key])}"
        for key, title, fmt in COLUMNS[4:]
    )


def member_fits(folder: Path, names: list[str]) -> list[dict]:
    """Each member's ``fit.json`` (fit seconds, validation accuracy); empty where there is none."""
    fits = []
    for name in names:
        path = folder / name / "fit.json"
        fits.append(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {})
    return fits


def label(row: dict) -> str:
    """``conv ADVI, K = 5``: a row's name in tables and legends."""
    method = "MAP" if row["inference"] == "map" else row["inference"].upper()
    return f"{row['model']} {method}, K = {row['members']}"


def markdown(rows: list[dict]) -> str:
    """``ensembles.md``: one line per ensemble and K."""
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = ["—" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_k_curve(rows: list[dict], path: Path) -> None:
    """Test NLL and the OOD AUROCs against K, one line per ensemble."""
    panels = (
        ("test_nll", "test NLL"),
        ("ood_auroc_noise", "OOD AUROC, noise"),
        ("ood_auroc_scrambled", "OOD AUROC, scrambled"),
    )
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels))
    for (key, title), ax in zip(panels, axes, strict=True):
        for name, group in _by_ensemble(rows).items():
            ks = [row["members"] for row in group if row.get(key) is not None]
            values = [row[key] for row in group if row.get(key) is not None]
            ax.plot(ks, values, marker="o", label=name)
        ax.set(xlabel="members K", title=title)
        ax.set_xscale("log")
        ks = sorted({row["members"] for row in rows})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")


def _by_ensemble(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        method = "MAP" if row["inference"] == "map" else row["inference"].upper()
        groups.setdefault(f"{row['model']} {method}", []).append(row)
    return groups


def shift_curves(rows: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """For each ensemble, K = 1 and its largest K: the rotation rows as arrays, by legend label."""
    curves = {}
    for group in _by_ensemble(rows).values():
        for row in {id(r): r for r in (group[0], group[-1])}.values():
            shift = list(row["shift"].values())
            curves[label(row)] = {key: np.array([r[key] for r in shift], float) for key in shift[0]}
    return curves


def write(rows: list[dict], out: Path) -> None:
    """``ensembles.json``, ``ensembles.md``, ``ensembles_k.png`` and ``ensembles_shift.png``."""
    tables.write_json_list(out / "ensembles.json", rows)
    write_text(out / "ensembles.md", markdown(rows))
    plot_k_curve(rows, out / "ensembles_k.png")
    uncertainty_plots.plot_shift(shift_curves(rows), out / "ensembles_shift.png")
