"""Network architectures as plain values: the layer sizes of each registered network.

A spec says what a network is (widths, kernels, pooling) and nothing of how it
is computed, so this module imports neither PyMC nor PyTensor: ``preprocess``
and ``predict --help`` stay light. The PyTensor graph (:mod:`bnn.model.networks`),
the NumPy pass (:mod:`bnn.predictive.forward`), the local-reparameterisation pass
(:mod:`bnn.inference.local_reparam`) and the FLOP count are each registered
under the spec's ``name``; one test checks that every registry covers every spec.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import pairwise

from bnn.core.errors import ConfigError
from bnn.core.mnist import IMAGE_SHAPE, N_CLASSES, N_PIXELS


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

    @property
    def widest_output(self) -> int:
        """Values per image in the widest layer output (what bounds a forward pass's memory)."""
        return max(self.layer_sizes[1:])

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{layer}_W`` (n_in, n_out) and ``{layer}_b`` (n_out,) of every layer, in order."""
        return _dense_shapes(self.layer_names, self.layer_sizes)

    def forward_flops(self, batch_size: int) -> float:
        """FLOPs (2 per multiply-add) of one forward pass of ``batch_size`` images."""
        return 2.0 * batch_size * sum(n_in * n_out for n_in, n_out in pairwise(self.layer_sizes))


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

    @property
    def widest_output(self) -> int:
        """Values per image in the widest layer output that a forward pass keeps whole.

        A conv block keeps its pooled maps: its maps at full resolution are made
        one cache-sized block of images at a time
        (:func:`bnn.predictive.forward.convolve_pool`).
        """
        pooled = [math.prod(out) for _, _, out in self.conv_shapes]
        return max([*pooled, *self.dense_sizes[1:]])

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{layer}_W`` and ``{layer}_b`` of every layer; a conv's W is (k, k, c_in, c_out)."""
        shapes = {}
        for layer, (_, _, n_in), (_, _, n_out) in self.conv_shapes:
            shapes[f"{layer}_W"] = (self.kernel_size, self.kernel_size, n_in, n_out)
            shapes[f"{layer}_b"] = (n_out,)
        return shapes | _dense_shapes(self.dense_names, self.dense_sizes)

    def forward_flops(self, batch_size: int) -> float:
        """FLOPs (2 per multiply-add) of one forward pass; a conv counts as its im2col product."""
        products = sum(n_in * n_out for n_in, n_out in pairwise(self.dense_sizes))
        for _layer, (height, width, n_in), (_, _, n_out) in self.conv_shapes:
            out_h, out_w = height - self.kernel_size + 1, width - self.kernel_size + 1
            products += out_h * out_w * self.kernel_size**2 * n_in * n_out
        return 2.0 * batch_size * products


def _dense_shapes(names: list[str], sizes: list[int]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, (n_in, n_out) in zip(names, pairwise(sizes), strict=True):
        shapes[f"{name}_W"] = (n_in, n_out)
        shapes[f"{name}_b"] = (n_out,)
    return shapes


SPECS = {"dense": DenseSpec, "conv": ConvSpec}


def spec_from_dict(values: dict) -> DenseSpec | ConvSpec:
    """Rebuild an architecture spec from its saved dictionary."""
    values = dict(values)
    spec_class = SPECS[values["name"]]
    for key in ("n_hidden", "n_filters"):
        if key in values:
            values[key] = tuple(values[key])
    return spec_class(**values)
