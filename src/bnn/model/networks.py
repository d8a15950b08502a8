"""Network architectures: each a function of (input, prior family, sizes).

A network function builds the symbolic logits from layer constructors. Its
twin in :mod:`bnn.predictive.forward` evaluates the same network in NumPy over a batch of
posterior draws; a test keeps the two in agreement. Adding an architecture
means one function here, one there, and one file in ``conf/model/``.
"""

from __future__ import annotations

from pytensor.tensor import TensorVariable

from bnn.core.mnist import IMAGE_SHAPE
from bnn.model.layers import activate, conv2d, dense, max_pool
from bnn.model.priors import PriorFamily
from bnn.model.specs import ConvSpec, DenseSpec


def dense_stack(
    inputs: TensorVariable, sizes: list[int], names: list[str], prior: PriorFamily, activation: str
) -> TensorVariable:
    """Dense layers ``names`` of widths ``sizes``; the last one (the output) is linear."""
    outputs = inputs
    for index, layer in enumerate(names):
        outputs = dense(
            layer,
            outputs,
            sizes[index],
            sizes[index + 1],
            prior,
            activation="linear" if layer == "output" else activation,
        )
    return outputs


def dense_network(images: TensorVariable, spec: DenseSpec, prior: PriorFamily) -> TensorVariable:
    """Logits of the dense network for ``images`` of shape (batch, 784)."""
    return dense_stack(images, spec.layer_sizes, spec.layer_names, prior, spec.activation)


def conv_network(images: TensorVariable, spec: ConvSpec, prior: PriorFamily) -> TensorVariable:
    """Logits of the convolutional network for ``images`` of shape (batch, 784)."""
    outputs = images.reshape((-1, *IMAGE_SHAPE, 1))
    for layer, in_shape, out_shape in spec.conv_shapes:
        outputs = conv2d(layer, outputs, in_shape, out_shape[2], spec.kernel_size, prior)
        conv_shape = (in_shape[0] - spec.kernel_size + 1, in_shape[1] - spec.kernel_size + 1)
        # Pool, then activate: tanh is increasing, so this equals tanh-then-pool
        # exactly, and tanh (40% of a conv step) runs on a quarter of the values.
        outputs = max_pool(outputs, (*conv_shape, out_shape[2]), spec.pool_size)
        outputs = activate(outputs, spec.activation)
    outputs = outputs.reshape((-1, spec.n_features))
    return dense_stack(outputs, spec.dense_sizes, spec.dense_names, prior, spec.activation)


# The PyTensor graph of each network in bnn.model.specs.SPECS.
GRAPHS = {"dense": dense_network, "conv": conv_network}


def build_network(images: TensorVariable, spec, prior: PriorFamily) -> TensorVariable:
    """The logits graph of the network registered under ``spec.name``."""
    return GRAPHS[spec.name](images, spec, prior)
