"""The uncertainty flag: threshold choice on hand-made scores, saving, and validation."""

import json
import math

import numpy as np
import pytest

from bnn.core.errors import ConfigError, DataError
from bnn.evaluation.scoring import scores_of
from bnn.predictive.chunked import summarise_predictive
from bnn.serving import flag_rule
from bnn.serving.flag_rule import FlagRule, choose_threshold
from helpers_posterior import tiny_posterior


def choose(values, correct, target):
    scores = {"mutual_info": np.array(values, dtype=float)}
    return choose_threshold(scores, np.array(correct, dtype=bool), "mutual_info", target)


def test_keeps_the_longest_prefix_that_meets_the_target():
    # Unsorted on purpose: sorted, the accuracies of the prefixes are 1, 1, 1, 3/4, 4/5.
    rule = choose([0.4, 0.1, 0.5, 0.3, 0.2], [False, True, True, True, True], 0.9)
    assert rule == FlagRule("mutual_info", 0.3, 0.9, 1.0, 0.4)


def test_all_images_meeting_the_target_flag_nothing():
    rule = choose([0.4, 0.1, 0.5, 0.3, 0.2], [False, True, True, True, True], 0.8)
    assert rule == FlagRule("mutual_info", 0.5, 0.8, 0.8, 0.0)
    assert choose([0.2, 0.7], [True, True], 1.0).threshold == 0.7


def test_a_dip_in_accuracy_does_not_stop_the_search():
    # Prefix accuracies 1, 1/2, 2/3, 3/4, 4/5, 4/6: the second fails, the fifth passes.
    rule = choose([1, 2, 3, 4, 5, 6], [True, False, True, True, True, False], 0.8)
    assert rule.threshold == 5
    assert rule.valid_accuracy_kept == 0.8
    assert rule.valid_flagged_fraction == pytest.approx(1 / 6)


def test_tied_scores_are_kept_or_flagged_together():
    # Keeping one of the two 0.2s would reach 100%, but a threshold cannot split them.
    values, correct = [0.1, 0.2, 0.2, 0.3], [True, True, False, True]
    assert choose(values, correct, 0.9) == FlagRule("mutual_info", 0.1, 0.9, 1.0, 0.75)
    assert choose(values, correct, 0.75).threshold == 0.3


@pytest.mark.parametrize(
    ("values", "correct"),
    [([0.1, 0.2], [False, True]), ([0.0, 0.0, 1.0], [True, False, True])],
    ids=["most-certain-image-wrong", "most-certain-tie-group-misses"],
)
def test_no_prefix_meeting_the_target_flags_everything(values, correct):
    rule = choose(values, correct, 1.0)
    assert rule == FlagRule("mutual_info", -math.inf, 1.0, None, 1.0)
    assert rule.flags({"mutual_info": np.array(values)}).all()


def test_flags_are_the_scores_above_the_threshold():
    rule = FlagRule("entropy", 0.5, 0.99, 1.0, 0.2)
    flags = rule.flags({"entropy": np.array([0.1, 0.5, 0.6]), "mutual_info": np.zeros(3)})
    np.testing.assert_array_equal(flags, [False, False, True])


def test_unknown_score_names_the_valid_ones():
    scores = {"entropy": np.ones(2), "mutual_info": np.ones(2)}
    with pytest.raises(ConfigError, match=r"'chi2'.*entropy, mutual_info"):
        choose_threshold(scores, np.ones(2, bool), "chi2", 0.99)


@pytest.mark.parametrize("target", [0.0, -0.5, 1.01])
def test_target_accuracy_outside_zero_one_is_refused(target):
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        choose([0.1], [True], target)


@pytest.mark.parametrize(
    ("values", "correct"),
    [([0.1, 0.2], [True]), ([], []), ([0.1, np.nan], [True, True])],
    ids=["length-mismatch", "empty", "nan"],
)
def test_scores_that_cannot_be_thresholded_are_refused(values, correct):
    with pytest.raises(ValueError, match=r"scores\['mutual_info'\]"):
        choose(values, correct, 0.9)


@pytest.mark.parametrize("threshold", [0.25, -math.inf])
def test_save_and_load_round_trip_in_strict_json(tmp_path, threshold):
    rule = FlagRule("mutual_info", threshold, 0.995, None if threshold < 0 else 0.996, 0.1)
    flag_rule.save(rule, tmp_path)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads((tmp_path / "flag.json").read_text(), parse_constant=refuse)
    assert flag_rule.load(tmp_path) == rule


def test_missing_flag_file_names_the_fix(tmp_path):
    with pytest.raises(
        DataError, match=r"flag\.json not found; rebuild it with `dvc repro -f fit_advi`"
    ):
        flag_rule.load(tmp_path)


def test_malformed_flag_file_names_the_fix(tmp_path):
    (tmp_path / "flag.json").write_text('{"score": "entropy"}')
    with pytest.raises(DataError, match=r"not a valid flag rule.*dvc repro -f fit_advi"):
        flag_rule.load(tmp_path)


def test_rule_from_validation_thresholds_the_predictive_of_the_validation_set():
    posterior = tiny_posterior()
    images = np.random.default_rng(0).random((60, 784), dtype=np.float32)
    summary = summarise_predictive(posterior, images, 8, np.random.default_rng(4))
    predicted = summary.mean_probabilities.argmax(axis=1)
    scores = scores_of(summary)
    # Wrong on the 10 most uncertain images: at 90%, 5 of them can stay (50 / 55).
    wrong = np.argsort(scores["mutual_info"])[-10:]
    labels = predicted.copy()
    labels[wrong] = (predicted[wrong] + 1) % 10
    rule = flag_rule.rule_from_validation(
        posterior, images, labels, 8, 4, "mutual_info", target_accuracy=0.9, chunk_images=7
    )
    # Blocks of 7 images against one block: float32 products summed in another order,
    # so the threshold agrees to float32's precision, not bit for bit.
    expected = choose_threshold(scores, labels == predicted, "mutual_info", 0.9)
    assert rule.score == expected.score and rule.target_accuracy == expected.target_accuracy
    assert rule.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert rule.valid_flagged_fraction == 5 / 60
    assert rule.valid_accuracy_kept == 50 / 55
    # Flags from the rule's own computation (blocks of 7): the image at the threshold is kept.
    blocked = summarise_predictive(posterior, images, 8, np.random.default_rng(4), chunk_images=7)
    np.testing.assert_array_equal(rule.flags(scores_of(blocked)), np.isin(np.arange(60), wrong[5:]))


def test_rule_from_validation_refuses_an_unknown_score_before_predicting():
    with pytest.raises(ConfigError, match="one of entropy, mutual_info"):
        flag_rule.rule_from_validation(None, np.zeros((1, 784)), np.zeros(1), 1, 0, score="x")
