"""The evaluate stage's console line."""

from bnn.pipeline.evaluate_stage import headline

SCORES = {
    "test_accuracy": 0.9849,
    "test_nll": 0.05407,
    "test_ece": 0.00429,
    "test_brier": 0.02446,
    "error_auroc": 0.97425,
    "error_auroc_score": "entropy",
    "ood_auroc_noise": 0.99310,
    "ood_auroc_noise_entropy": 0.99058,
}


def test_headline_formats_the_six_numbers():
    line = headline(SCORES)
    assert line.startswith("evaluate: accuracy 98.49%, NLL 0.0541, ECE 0.0043, Brier 0.0245")
    assert "error AUROC 0.974 (entropy)" in line and "OOD AUROC noise 0.993" in line
    assert "noise_entropy" not in line


def test_an_undefined_score_reads_n_a():
    # No test errors: the error AUROC is undefined (None in metrics.json).
    assert "error AUROC n/a (entropy)" in headline(SCORES | {"error_auroc": None})
