"""Ensembles: member seeds, the manifest, and the mixture predictive against its members."""

import json
from dataclasses import replace

import numpy as np
import pytest

import helpers_posterior
from bnn.core.errors import ConfigError, DataError
from bnn.evaluation import scoring
from bnn.predictive import chunked, ensemble
from bnn.predictive import posterior as posterior_io
from bnn.predictive.ensemble import Ensemble
from bnn.predictive.posterior import Posterior
from bnn.predictive.reductions import entropy


def members(n: int, sd: float = 0.05) -> list[Posterior]:
    return [helpers_posterior.tiny_posterior(seed=10 + i, sd=sd) for i in range(n)]


def as_ensemble(posteriors: list[Posterior]) -> Ensemble:
    names = [ensemble.member_name(i) for i in range(len(posteriors))]
    return Ensemble(members=posteriors, meta=posteriors[0].meta, names=names)


def save_ensemble(folder, posteriors: list[Posterior]) -> None:
    names = [ensemble.member_name(i) for i in range(len(posteriors))]
    for name, member in zip(names, posteriors, strict=True):
        (folder / name).mkdir(parents=True)
        posterior_io.save(member, folder / name)
    ensemble.write_manifest(folder, names, replace(posteriors[0].meta, seed=7))


@pytest.fixture
def images():
    return np.random.default_rng(0).random((23, 784), dtype=np.float32)


def test_member_seeds_are_distinct_and_do_not_depend_on_the_ensemble_size():
    seeds = [ensemble.member_seed(20160601, i) for i in range(10)]
    assert len(set(seeds)) == 10 and 20160601 not in seeds
    assert ensemble.member_seed(20160601, 3) == seeds[3]  # the same member of any K
    assert ensemble.member_seed(1, 3) != seeds[3]


def test_draws_are_spread_evenly_over_the_members():
    assert chunked.draws_per_member(11, 3) == [4, 4, 3]
    assert chunked.draws_per_member(30, 3) == [10, 10, 10]
    with pytest.raises(ConfigError, match="draw at least 3"):
        chunked.draws_per_member(2, 3)


def test_mixture_is_the_members_summaries_added_up(images):
    mixture = as_ensemble(members(3))
    summary = chunked.summarise_predictive(
        mixture, images, 11, np.random.default_rng(4), chunk_draws=3, chunk_images=7
    )
    streams = np.random.default_rng(4).spawn(3)
    parts = [
        chunked.summarise_predictive(m, images, n, rng, chunk_draws=3, chunk_images=7)
        for m, n, rng in zip(mixture.members, [4, 4, 3], streams, strict=True)
    ]
    # Each member contributes its share of the draws: the counts add up.
    assert summary.n_draws == 11
    assert (summary.vote_counts.sum(axis=1) == 11).all()
    np.testing.assert_array_equal(summary.label_counts, sum(p.label_counts for p in parts))
    # The mixture mean is the draw-weighted mean of the member means.
    expected = sum(n * p.mean_probabilities for n, p in zip([4, 4, 3], parts, strict=True)) / 11
    np.testing.assert_allclose(summary.mean_probabilities, expected, rtol=1e-12)


def test_mixture_summary_reduces_the_mixture_draws(images):
    mixture = as_ensemble(members(3))
    samples = chunked.sample_predictive(mixture, images, 9, np.random.default_rng(2), 3, 5)
    summary = chunked.summarise_predictive(mixture, images, 9, np.random.default_rng(2), 3, 5)
    # The draws are the members' in order, three each: draws 3-5 are member 1's.
    member_1 = chunked.sample_predictive(
        mixture.members[1], images, 3, np.random.default_rng(2).spawn(3)[1], 3, 5
    )
    np.testing.assert_array_equal(samples.probabilities[3:6], member_1.probabilities)
    # Summing float32 draws in blocks or at once: the same values to float32 round-off.
    np.testing.assert_allclose(summary.mean_probabilities, samples.mean_probabilities, rtol=1e-5)
    np.testing.assert_allclose(
        summary.expected_entropy, entropy(samples.probabilities).mean(axis=0), rtol=1e-5
    )


def test_mutual_information_splits_into_within_and_between_members(images):
    mixture = as_ensemble(members(3, sd=0.3))
    summary = chunked.summarise_predictive(mixture, images, 30, np.random.default_rng(1), 5)
    total = scoring.scores_of(summary)["mutual_info"]
    between = scoring.member_disagreement(summary)
    within = summary.member_entropy - summary.expected_entropy
    np.testing.assert_allclose(total, within + between, atol=1e-12)
    assert (between > 1e-4).all()  # three different networks disagree on every image
    assert (total >= within - 1e-12).all()


def test_identical_members_do_not_disagree(images):
    point = helpers_posterior.tiny_posterior(seed=3, sd=0.0)
    summary = chunked.summarise_predictive(
        as_ensemble([point, point, point]), images, 30, np.random.default_rng(1)
    )
    np.testing.assert_allclose(scoring.member_disagreement(summary), 0, atol=1e-12)


def test_identical_posteriors_disagree_only_by_their_monte_carlo_error(images):
    # Each member's mean is estimated from its own draws, so the estimate of the
    # disagreement of identical members is positive and falls as 1/draws.
    one = helpers_posterior.tiny_posterior(seed=3, sd=0.2)
    estimates = []
    for draws in (30, 3000):
        summary = chunked.summarise_predictive(
            as_ensemble([one, one, one]), images, draws, np.random.default_rng(1), 50
        )
        within = (summary.member_entropy - summary.expected_entropy).mean()
        estimates.append(scoring.member_disagreement(summary).mean())
    assert estimates[1] < estimates[0] / 30
    assert estimates[1] < 0.002 * within  # while each member's own MI stays


def test_a_map_ensemble_has_only_disagreement(images):
    maps = [replace(m, stds={k: 0 * v for k, v in m.stds.items()}) for m in members(2)]
    summary = chunked.summarise_predictive(as_ensemble(maps), images, 10, np.random.default_rng(1))
    np.testing.assert_allclose(
        scoring.scores_of(summary)["mutual_info"], scoring.member_disagreement(summary), atol=1e-12
    )


def test_one_posterior_has_no_disagreement(images):
    summary = chunked.summarise_predictive(members(1)[0], images, 10, np.random.default_rng(1))
    np.testing.assert_array_equal(scoring.member_disagreement(summary), 0)


def test_first_k_members_of_a_larger_ensemble_draw_as_the_ensemble_of_k(images):
    mixture = as_ensemble(members(4))
    small = chunked.summarise_predictive(mixture.first(2), images, 8, np.random.default_rng(6))
    rngs = np.random.default_rng(6).spawn(4)
    parts = [
        chunked.summarise_predictive(m, images, 4, r)
        for m, r in zip(mixture.members[:2], rngs[:2], strict=True)
    ]
    combined = chunked.combine(parts)
    for name in ("mean_probabilities", "expected_entropy", "vote_counts", "label_counts"):
        np.testing.assert_array_equal(getattr(small, name), getattr(combined, name))


def test_saved_ensemble_loads_as_one_model(tmp_path, images):
    posteriors = members(2)
    save_ensemble(tmp_path, posteriors)
    loaded = ensemble.load_model(tmp_path)
    assert isinstance(loaded, Ensemble) and loaded.names == ["member-0", "member-1"]
    assert ensemble.load_model_meta(tmp_path).seed == 7
    np.testing.assert_array_equal(
        loaded.members[1].means["output_b"], posteriors[1].means["output_b"]
    )
    before = ensemble.model_fingerprint(tmp_path)
    posterior_io.save(members(3)[2], tmp_path / "member-1")  # a member refitted
    assert ensemble.model_fingerprint(tmp_path) != before


def test_a_missing_member_is_named(tmp_path):
    save_ensemble(tmp_path, members(3))
    for path in (tmp_path / "member-2").iterdir():
        path.unlink()
    (tmp_path / "member-2").rmdir()
    with pytest.raises(DataError, match="member member-2 is missing"):
        ensemble.load_model(tmp_path)


def test_a_member_of_another_fit_is_refused(tmp_path):
    save_ensemble(tmp_path, members(2))
    other = helpers_posterior.tiny_posterior(seed=1)
    other.meta = replace(other.meta, prior={"family": "fixed", "sigma": 0.1})
    posterior_io.save(other, tmp_path / "member-1")
    with pytest.raises(DataError, match="member-1 is not a member of this ensemble"):
        ensemble.load_model(tmp_path)


@pytest.mark.parametrize(
    "manifest, problem",
    [
        ("not json", "is not an ensemble manifest"),
        (
            json.dumps({"members": [], "meta": {"model": {}}, "schema_version": 1}),
            "lists no member",
        ),
        (
            json.dumps({"members": ["../x"], "meta": {"model": {}}, "schema_version": 1}),
            "inside it",
        ),
        (
            json.dumps({"members": ["m"], "meta": {"model": {}}, "schema_version": 9}),
            "schema version 9",
        ),
    ],
)
def test_a_bad_manifest_is_one_clear_error(tmp_path, manifest, problem):
    (tmp_path / ensemble.MANIFEST_FILE).write_text(manifest)
    with pytest.raises(DataError, match=problem):
        ensemble.load_model(tmp_path)
