"""Checkpoints: a fit stopped at any step and resumed is bit-identical to one never stopped.

The subprocess version (a real SIGKILL of ``python src/fit.py``) is in
tests/integration/test_fit_resume.py; these run the engines in-process.
"""

import signal

import numpy as np
import pymc as pm
import pytest

from bnn.core.signals import Interrupted
from bnn.inference.checkpoint import Checkpoint, CheckpointSettings, FitState, fit_key
from bnn.inference.pymc_engine import fit_advi, initial_means
from bnn.inference.settings import AdviSettings
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import ConvSpec, DenseSpec
from helpers_fits import StopAt, assert_same_fit, fit

ENGINES = [
    ("advi", "fused", DenseSpec(n_hidden=(5,))),
    ("advi", "pymc", DenseSpec(n_hidden=(5,))),
    ("map", "fused", DenseSpec(n_hidden=(5,))),
    ("map", "pymc", DenseSpec(n_hidden=(5,))),
    ("lrt", "fused", DenseSpec(n_hidden=(5,))),
    ("advi", "fused", ConvSpec(n_filters=(2,), kernel_size=5, n_hidden=(4,))),
]


@pytest.mark.parametrize(("method", "engine", "spec"), ENGINES)
def test_a_fit_stopped_and_resumed_is_bit_identical(tmp_path, method, engine, spec):
    reference = fit(method, engine, spec)
    settings = CheckpointSettings(folder=tmp_path, every_steps=7, every_seconds=3600)
    checkpoint = Checkpoint(settings, key="k")
    # Stopped by a crash at step 17: the checkpoint of step 14 is what survives.
    with pytest.raises(RuntimeError):
        fit(method, engine, spec, checkpoint, StopAt(17, "crash"))
    resumed = Checkpoint(settings, key="k")
    assert resumed.saved_meta()["step"] == 14
    assert_same_fit(reference, fit(method, engine, spec, resumed))
    assert resumed.resumed_step == 14


@pytest.mark.parametrize(("method", "engine", "spec"), ENGINES[:2])
def test_sigterm_saves_the_step_it_stopped_at_and_resumes_exactly(tmp_path, method, engine, spec):
    reference = fit(method, engine, spec)
    settings = CheckpointSettings(folder=tmp_path, every_steps=1000, every_seconds=3600)
    with pytest.raises(Interrupted) as stopped:
        fit(method, engine, spec, Checkpoint(settings, "k"), StopAt(9, "signal"))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    resumed = Checkpoint(settings, "k")
    assert resumed.saved_meta()["step"] == 9
    assert_same_fit(reference, fit(method, engine, spec, resumed))


def test_a_checkpoint_of_another_fit_is_not_applied(tmp_path, capsys):
    settings = CheckpointSettings(folder=tmp_path, every_steps=5, every_seconds=3600)
    spec = DenseSpec(n_hidden=(5,))
    with pytest.raises(RuntimeError):
        fit("advi", "fused", spec, Checkpoint(settings, "k"), StopAt(12, "crash"))
    # The same file name (a forged key) with another network: refused, the fit starts afresh.
    other = Checkpoint(settings, "k")
    reference = fit("advi", "fused", DenseSpec(n_hidden=(6,)))
    assert_same_fit(reference, fit("advi", "fused", DenseSpec(n_hidden=(6,)), other))
    assert other.resumed_step == 0
    assert "does not fit this run" in capsys.readouterr().err


def test_an_unreadable_checkpoint_is_reported_and_ignored(tmp_path, capsys):
    settings = CheckpointSettings(folder=tmp_path)
    checkpoint = Checkpoint(settings, "k")
    checkpoint.path.write_bytes(b"PK\x03\x04 truncated")
    assert checkpoint.saved_meta() is None
    assert "unreadable" in capsys.readouterr().err


def test_resume_false_ignores_the_checkpoint(tmp_path):
    settings = CheckpointSettings(folder=tmp_path, every_steps=5)
    spec = DenseSpec(n_hidden=(5,))
    with pytest.raises(RuntimeError):
        fit("advi", "fused", spec, Checkpoint(settings, "k"), StopAt(12, "crash"))
    fresh = CheckpointSettings(folder=tmp_path, every_steps=5, resume=False)
    assert Checkpoint(fresh, "k").saved_meta() is None


def test_fit_key_changes_with_the_settings_and_the_data():
    images = np.zeros((4, 3), np.float32)
    key = fit_key({"seed": 1}, [images])
    assert key == fit_key({"seed": 1}, [images.copy()])
    assert key != fit_key({"seed": 2}, [images])
    changed = images.copy()
    changed[0, 0] = 1
    assert key != fit_key({"seed": 1}, [changed])


def test_pymc_engine_takes_the_steps_pm_advi_fit_takes():
    """Our loop around PyMC's compiled step gives pm.ADVI.fit's own fit, bit for bit."""
    rng = np.random.default_rng(0)
    images, labels = rng.random((60, 784)).astype(np.float32), rng.integers(0, 10, 60)
    settings = AdviSettings(engine="pymc", n_iter=20, batch_size=16, lr_decay="none")

    def model():
        return bnn_model(images, labels, DenseSpec(n_hidden=(4,)), FixedNormal(1.0), 16)

    ours = fit_advi(model(), settings, seed=5, progressbar=False)
    with model() as reference_model:
        start = initial_means(reference_model, "glorot", 1.0, np.random.default_rng(5))
        advi = pm.ADVI(
            random_seed=5,
            start=start,
            start_sigma={name: np.full(value.size, 1e-3) for name, value in start.items()},
        )
        approx = advi.fit(20, obj_optimizer=pm.adam(learning_rate=1e-3), progressbar=False)
    np.testing.assert_array_equal(ours.loss_history, approx.hist)
    mu = approx.groups[0].params_dict["mu"].get_value()
    flat = np.concatenate([ours.means[name].ravel() for name in approx.groups[0].ordering])
    np.testing.assert_array_equal(flat, mu)


def test_fit_state_restores_arrays_generators_in_place():
    array, generator = np.arange(3.0), np.random.default_rng(0)
    state = FitState()
    state.add_array("a", array)
    state.add_generator("g", generator)
    arrays, generators = state.snapshot()
    expected = generator.random()
    array[:] = -1
    state.load(arrays, generators)
    assert array.tolist() == [0.0, 1.0, 2.0]
    assert generator.random() == expected
