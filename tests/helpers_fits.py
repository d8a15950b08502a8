"""Tiny in-process fits for the checkpoint tests of every engine (unit and integration)."""

import os
import signal

import numpy as np

from bnn.data.dataset import LabelledImages
from bnn.inference.fitting import fit_posterior
from bnn.inference.settings import AdviSettings
from bnn.inference.validation import ValidationMonitor
from bnn.model.priors import FixedNormal

N_ITER = 24


def tiny_data(seed: int, n: int = 64) -> LabelledImages:
    rng = np.random.default_rng(seed)
    return LabelledImages(rng.random((n, 28, 28)).astype(np.float32), rng.integers(0, 10, n))


class StopAt:
    """A callback that stops the fit after ``step`` steps: by an error or a real signal."""

    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def __call__(self, _factors, _losses, step: int) -> None:
        if step != self.step:
            return
        if self.how == "crash":
            raise RuntimeError("the machine went away")
        os.kill(os.getpid(), signal.SIGTERM)


def fit(method, engine, spec, checkpoint=None, stop=None):
    train, valid = tiny_data(0), tiny_data(1, 32)
    settings = AdviSettings(
        method=method, engine=engine, n_iter=N_ITER, batch_size=16, validate_every=5
    )
    monitor = ValidationMonitor(valid, spec, settings.validate_every)
    callbacks = [monitor] if stop is None else [monitor, stop]
    posterior, result = fit_posterior(
        train,
        spec,
        FixedNormal(1.0),
        settings,
        seed=3,
        meta={},
        progressbar=False,
        callbacks=callbacks,
        checkpoint=checkpoint,
    )
    return posterior, result, monitor.curve(result.began)


def assert_same_fit(one, other):
    (posterior, result, curve), (posterior2, result2, curve2) = one, other
    np.testing.assert_array_equal(result.loss_history, result2.loss_history)
    for name in posterior.means:
        np.testing.assert_array_equal(posterior.means[name], posterior2.means[name])
        np.testing.assert_array_equal(posterior.stds[name], posterior2.stds[name])
    assert [(s, a) for s, _, a in curve] == [(s, a) for s, _, a in curve2]
