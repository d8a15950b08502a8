"""Validation accuracy during the fit, and time to accuracy."""

import numpy as np
import pytest

from bnn.data.dataset import LabelledImages
from bnn.inference.fitting import fit_posterior, posterior_mean_accuracy
from bnn.inference.settings import AdviSettings
from bnn.inference.validation import ValidationMonitor, seconds_to_reach, time_to_accuracy
from bnn.model.priors import FixedNormal
from bnn.model.specs import DenseSpec

ROWS = [(100, 5.0, 0.95), (200, 10.0, 0.975), (300, 15.0, 0.981), (400, 20.0, 0.979)]


def test_time_to_accuracy_is_the_first_check_at_or_above_the_target():
    assert seconds_to_reach(ROWS, 0.98) == 15.0
    assert seconds_to_reach(ROWS, 0.975) == 10.0
    assert seconds_to_reach(ROWS, 0.99) is None
    assert time_to_accuracy(ROWS) == {"fit_seconds_to_97": 10.0, "fit_seconds_to_98": 15.0}


def test_monitor_checks_every_n_steps_and_ends_at_the_final_mean():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 300)
    images = centres[labels] + 0.3 * rng.normal(size=(300, 784)).astype(np.float32)
    train, valid = (
        LabelledImages(images[:200], labels[:200]),
        LabelledImages(images[200:], labels[200:]),
    )
    spec = DenseSpec(n_hidden=(8,))
    monitor = ValidationMonitor(valid, spec, every=10)
    settings = AdviSettings(n_iter=40, batch_size=50, float_dtype="float64", learning_rate=0.01)
    fitted, result = fit_posterior(
        train,
        spec,
        FixedNormal(1.0),
        settings,
        seed=0,
        meta={},
        progressbar=False,
        callbacks=[monitor],
    )
    steps, seconds, scores = zip(*monitor.curve(result.began), strict=True)
    assert steps == (10, 20, 30, 40)
    assert 0 < seconds[0] and list(seconds) == sorted(seconds)
    # The checks' own time is off the clock.
    assert seconds[-1] <= result.seconds - monitor.own_seconds and monitor.own_seconds > 0
    # The last check saw the final approximation: its accuracy is the fitted mean's.
    assert scores[-1] == pytest.approx(posterior_mean_accuracy(fitted, valid))
    assert scores[-1] > 0.5  # separable classes; the monitor sees a network that learns
