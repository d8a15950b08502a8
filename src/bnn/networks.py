"""Network architectures: each a function of (input, prior family, sizes).

A network function builds the symbolic logits from layer constructors. Its
twin in :mod:`bnn.forward` evaluates the same network in NumPy over a batch of
posterior draws; a test keeps the two in agreement. Adding an architecture
means one function here, one there, and one file in ``conf/model/``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pytensor.tensor import TensorVariable

from bnn.errors import ConfigError
from bnn.layers import activate, conv2d, dense, max_pool
from bnn.priors import PriorFamily

IMAGE_SHAPE = (28, 28)
N_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
N_CLASSES = 10


@dataclass(frozen=True)
class DenseSpec:
    """A multilayer perceptron: ``n_hidden`` widths, one activation for all hidden layers."""

    n_hidden: tuple[int, ...] = (800, 800)
    activation: str = "tanh"
    name: str = "dense"

    def to_dict(self) -> dict:
        """JSON-ready values (lists, not tuples)."""
        return asdict(self) | {"n_hidden": list(self.n_hidden)}

    @property
    def layer_sizes(self) -> list[int]:
        return [N_PIXELS, *self.n_hidden, N_CLASSES]

    @property
    def layer_names(self) -> list[str]:
        return [f"hidden{i + 1}" for i in range(len(self.n_hidden))] + ["output"]


@dataclass(frozen=True)
class ConvSpec:
    """Convolution blocks (conv ``kernel_size``, tanh, max-pool ``pool_size``), then dense layers.

    The default is the 2016 experiment's CNN: conv 32 5x5, pool 2, conv 32 5x5,
    pool 2, dense 256, softmax. Shapes are checked when the spec is made.
    """

    n_filters: tuple[int, ...] = (32, 32)
    kernel_size: int = 5
    pool_size: int = 2
    n_hidden: tuple[int, ...] = (256,)
    activation: str = "tanh"
    name: str = "conv"

    def __post_init__(self) -> None:
        self.conv_shapes  # noqa: B018 -- validates the shapes

    def to_dict(self) -> dict:
        """JSON-ready values (lists, not tuples)."""
        return asdict(self) | {"n_filters": list(self.n_filters), "n_hidden": list(self.n_hidden)}

    @property
    def conv_shapes(self) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int]]]:
        """``(layer, input shape, output shape after pooling)`` of each convolution block.

        Raises
        ------
        ConfigError
            If a kernel is larger than its input or a pooled size is not whole.
        """
        shapes, shape = [], (*IMAGE_SHAPE, 1)
        for index, n_out in enumerate(self.n_filters):
            layer = f"conv{index + 1}"
            height, width, _ = shape
            if self.kernel_size > min(height, width):
                raise ConfigError(
                    f"model: layer {layer} gets {height}x{width} feature maps, smaller than its "
                    f"{self.kernel_size}x{self.kernel_size} kernel; use fewer conv layers or a "
                    "smaller model.kernel_size (conf/model/conv.yaml)"
                )
            conv_h, conv_w = height - self.kernel_size + 1, width - self.kernel_size + 1
            if conv_h % self.pool_size or conv_w % self.pool_size:
                raise ConfigError(
                    f"model: layer {layer} outputs {conv_h}x{conv_w} maps, not divisible by "
                    f"model.pool_size={self.pool_size} (conf/model/conv.yaml)"
                )
            out = (conv_h // self.pool_size, conv_w // self.pool_size, n_out)
            shapes.append((layer, shape, out))
            shape = out
        return shapes

    @property
    def n_features(self) -> int:
        """Width of the flattened output of the last convolution block."""
        return math.prod(self.conv_shapes[-1][2]) if self.n_filters else N_PIXELS

    @property
    def dense_sizes(self) -> list[int]:
        return [self.n_features, *self.n_hidden, N_CLASSES]

    @property
    def dense_names(self) -> list[str]:
        return [f"hidden{i + 1}" for i in range(len(self.n_hidden))] + ["output"]


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


NETWORKS = {"dense": (DenseSpec, dense_network), "conv": (ConvSpec, conv_network)}


def spec_from_dict(values: dict) -> DenseSpec | ConvSpec:
    """Rebuild an architecture spec from its saved dictionary."""
    values = dict(values)
    spec_class, _ = NETWORKS[values["name"]]
    for key in ("n_hidden", "n_filters"):
        if key in values:
            values[key] = tuple(values[key])
    return spec_class(**values)


def build_network(images: TensorVariable, spec, prior: PriorFamily) -> TensorVariable:
    """Dispatch to the network function of ``spec.name``."""
    _, network = NETWORKS[spec.name]
    return network(images, spec, prior)
