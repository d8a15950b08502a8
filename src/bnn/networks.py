"""Network architectures: each a function of (input, prior family, sizes).

A network function builds the symbolic logits from layer constructors. Its
twin in :mod:`bnn.forward` evaluates the same network in NumPy over a batch of
posterior draws; a test keeps the two in agreement. Adding an architecture
means one function here, one there, and one file in ``conf/model/``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pytensor.tensor import TensorVariable

from bnn.layers import dense
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


def dense_network(images: TensorVariable, spec: DenseSpec, prior: PriorFamily) -> TensorVariable:
    """Logits of the dense network for ``images`` of shape (batch, 784)."""
    outputs = images
    sizes = spec.layer_sizes
    for index, layer in enumerate(spec.layer_names):
        is_output = layer == "output"
        outputs = dense(
            layer,
            outputs,
            sizes[index],
            sizes[index + 1],
            prior,
            activation="linear" if is_output else spec.activation,
        )
    return outputs


NETWORKS = {"dense": (DenseSpec, dense_network)}


def spec_from_dict(values: dict) -> DenseSpec:
    """Rebuild an architecture spec from its saved dictionary."""
    values = dict(values)
    spec_class, _ = NETWORKS[values["name"]]
    if "n_hidden" in values:
        values["n_hidden"] = tuple(values["n_hidden"])
    return spec_class(**values)


def build_network(images: TensorVariable, spec, prior: PriorFamily) -> TensorVariable:
    """Dispatch to the network function of ``spec.name``."""
    _, network = NETWORKS[spec.name]
    return network(images, spec, prior)
