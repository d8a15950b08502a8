"""The architecture, declared once: every pass registered for every spec, and agreeing."""

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bnn.inference import local_reparam
from bnn.model import networks
from bnn.model.priors import FixedNormal
from bnn.model.specs import SPECS, ConvSpec, DenseSpec
from bnn.predictive import forward

# Python implementations: an agreement test needs no C compilation.
PYTHON_MODE = "FAST_COMPILE"
# Small members of every registered architecture, for the agreement test.
SMALL = {"dense": DenseSpec(n_hidden=(7, 5)), "conv": ConvSpec(n_filters=(2, 3), n_hidden=(6,))}


def test_every_spec_has_every_pass_registered():
    names = set(SPECS)
    assert set(networks.GRAPHS) == names
    assert set(forward.FORWARDS) == names
    assert set(local_reparam.LRT_GRAPHS) == names
    assert set(SMALL) == names
    for name, spec in SMALL.items():
        assert spec.name == name and spec.forward_flops(1) > 0 and spec.widest_output > 0


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_graph_the_numpy_pass_and_the_lrt_pass_agree(name):
    """At one set of weights (the LRT pass with zero sd), all three give the same logits."""
    spec, rng = SMALL[name], np.random.default_rng(3)
    images = rng.random((4, 784))
    with pytensor.config.change_flags(floatX="float64"):
        with pm.Model() as model:
            logits = networks.build_network(pt.as_tensor(images), spec, FixedNormal(sigma=1.0))
    weights = {
        rv.name: rng.normal(0, 0.3, size=model.initial_point()[rv.name].shape)
        for rv in model.free_RVs
    }
    graph = pytensor.function(
        [model.rvs_to_values[rv] for rv in model.free_RVs],
        model.replace_rvs_by_values([logits])[0],
        mode=PYTHON_MODE,
    )(*(weights[rv.name] for rv in model.free_RVs))
    numpy = forward.FORWARDS[name](images, spec, {k: v[None] for k, v in weights.items()})[0]
    np.testing.assert_allclose(numpy, graph, rtol=1e-10, atol=1e-10)
    means = {k: pt.as_tensor(v) for k, v in weights.items()}
    stds = {k: pt.zeros_like(v) for k, v in means.items()}
    noise = local_reparam.NoiseStream(seed=0)
    lrt = local_reparam.lrt_logits(pt.as_tensor(images), spec, means, stds, noise)
    lrt = pytensor.function([], lrt, mode=PYTHON_MODE)()
    np.testing.assert_allclose(lrt, graph, rtol=1e-10, atol=1e-10)


def test_dense_step_flops_count_every_matrix_product_three_times():
    # 784-800-800-10 at batch 500: FACTS.md's 3.85 GFLOP per step.
    flops = 3 * DenseSpec().forward_flops(500)
    assert flops == 3 * 2 * 500 * (784 * 800 + 800 * 800 + 800 * 10)
    assert flops == pytest.approx(3.83e9, rel=0.01)


def test_conv_step_flops_count_convolutions_as_im2col_products():
    spec = ConvSpec()
    conv1 = 24 * 24 * 25 * 1 * 32  # 28x28 -> 24x24, 5x5 kernel, 1 -> 32 channels
    conv2 = 8 * 8 * 25 * 32 * 32  # 12x12 -> 8x8, 32 -> 32 channels
    dense = 4 * 4 * 32 * 256 + 256 * 10
    assert spec.forward_flops(500) == 2 * 500 * (conv1 + conv2 + dense)


@pytest.mark.parametrize("spec", [DenseSpec((5, 4)), ConvSpec((2, 3), 5, 2, (6,))])
def test_weight_shapes_are_the_pymc_models_weights(spec):
    # The saved posterior is checked against weight_shapes; it must be the model's own list.
    from bnn.model.pymc_model import predictive_model

    model = predictive_model(np.zeros((2, 784)), spec, FixedNormal(1.0))
    found = {
        rv.name: tuple(int(n) for n in rv.shape.eval())
        for rv in model.free_RVs
        if rv.name != "label"  # the unobserved label, not a weight
    }
    assert found == spec.weight_shapes()
    assert list(found) == list(spec.weight_shapes())
