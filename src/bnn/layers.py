"""Layers as graph constructors.

Each layer takes a symbolic input and a prior family, asks the prior for its
weights by systematic names (``{layer}_W``, ``{layer}_b``) and returns the
symbolic output.
"""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.tensor import TensorVariable

from bnn.priors import PriorFamily


def dense(
    name: str,
    inputs: TensorVariable,
    n_in: int,
    n_out: int,
    prior: PriorFamily,
    activation: str = "linear",
) -> TensorVariable:
    """A fully connected layer, ``activation(inputs @ W + b)``.

    Parameters
    ----------
    name : str
        Layer name; the weights are called ``{name}_W`` and ``{name}_b``.
    inputs : TensorVariable
        Input of shape (batch, n_in).
    n_in, n_out : int
        Input and output widths.
    prior : PriorFamily
        Called once for ``W`` (n_in, n_out) and once for ``b`` (n_out,).
    activation : {"tanh", "linear"}
        Nonlinearity applied to the output. The default is "linear".
    """
    weights = prior(f"{name}_W", (n_in, n_out))
    bias = prior(f"{name}_b", (n_out,))
    outputs = pt.dot(inputs, weights) + bias
    if activation == "tanh":
        return pt.tanh(outputs)
    if activation == "linear":
        return outputs
    raise ValueError(f"unknown activation {activation!r}; use 'tanh' or 'linear'")
