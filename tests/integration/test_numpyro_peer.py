"""The benchmark's NumPyro peer fits our model: the same logits, log density, start and schedule.

JAX and NumPyro are the benchmark's dependency group (``requirements-bench.lock``);
``make test-integration`` installs it (``make bench-env``).
"""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.inference.settings import AdviSettings, learning_rate_at
from bnn.model.networks import build_network
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import label_variable
from bnn.model.specs import ConvSpec, DenseSpec
from bnn.predictive import forward


@pytest.fixture(scope="module")
def numpyro_peer():
    """The peer, imported when a test runs: ``make test`` collects this file without JAX."""
    from benchmarks import numpyro_peer

    return numpyro_peer


SPECS = [DenseSpec(n_hidden=(8,)), ConvSpec(n_filters=(2, 3), n_hidden=(8,))]


def random_weights(spec, rng, scale=0.3):
    return {
        name: (rng.standard_normal(shape) * scale).astype(np.float32)
        for name, shape in spec.weight_shapes().items()
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_logits_equal_our_forward_pass(spec, numpyro_peer):
    rng = np.random.default_rng(0)
    weights, images = random_weights(spec, rng), rng.random((7, 784), dtype=np.float32)
    ours = forward.FORWARDS[spec.name](images, spec, {k: v[None] for k, v in weights.items()})[0]
    theirs = np.asarray(numpyro_peer.logits(images, spec, weights))
    # float32 sums of a few hundred terms of size ~1, in two different orders.
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_log_density_equals_the_pymc_models(spec, numpyro_peer):
    """Prior plus likelihood scaled to the training set, at the same weights and minibatch."""
    from numpyro.infer.util import log_density

    rng = np.random.default_rng(1)
    weights, sigma, n_total = random_weights(spec, rng), 0.7, 600
    images, labels = rng.random((20, 784), dtype=np.float32), rng.integers(0, 10, 20)
    with pytensor.config.change_flags(floatX="float32"), pm.Model() as model:
        logits = build_network(pt.as_tensor_variable(images), spec, FixedNormal(sigma))
        label_variable(logits, observed=labels.astype("int16"), total_size=n_total)
        ours = float(model.compile_logp()(weights))
    theirs, _ = log_density(
        numpyro_peer.bnn,
        (images, labels),
        {"spec": spec, "sigma": sigma, "n_total": n_total},
        weights,
    )
    assert float(theirs) == pytest.approx(ours, rel=1e-5)


def test_the_guide_starts_at_our_means_and_the_schedule_is_ours(numpyro_peer):
    spec, rng = SPECS[0], np.random.default_rng(2)
    settings = AdviSettings(batch_size=50, n_iter=40)
    start = random_weights(spec, rng, scale=0.05)
    images, labels = rng.random((200, 784), dtype=np.float32), rng.integers(0, 10, 200)
    fit = numpyro_peer.PeerFit(images, labels, spec, 1.0, settings, start, seed=3)
    for name, value in fit.means().items():
        np.testing.assert_array_equal(value, start[name])
    for index in (0, 1, 20, 39):
        assert float(fit._learning_rate(index)) == pytest.approx(
            learning_rate_at(index, settings), rel=1e-6
        )
    scales = {k: v for k, v in fit.svi.get_params(fit.state).items() if k.endswith("_scale")}
    assert all(np.allclose(v, settings.start_sigma, rtol=1e-5) for v in scales.values())
    first = fit.step()
    assert np.isfinite(first) and np.isfinite([fit.step() for _ in range(5)]).all()
    moved = fit.means()
    assert any(not np.array_equal(moved[k], start[k]) for k in start)
