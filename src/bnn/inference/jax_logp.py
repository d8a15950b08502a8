"""The PyMC model's log density and its gradient as a JAX function of the weights and a minibatch.

The fused engine's function (:mod:`bnn.inference.logp_gradient`) draws its
minibatch inside the compiled PyTensor function, from ``pm.Minibatch``'s random
rows. A step written in JAX (:mod:`bnn.inference.jax_engine`) draws the rows
itself, so that the whole step, minibatch included, is one program on the
device. Here the minibatch becomes an input: the graph of ``model.logp()`` in
one flat weight vector (:func:`bnn.inference.logp_gradient.flat_logp`, PyTensor's
own ops, no NumPy kernels), with every ``pm.Minibatch`` output replaced by a
placeholder, is compiled by PyTensor's JAX backend and handed back as a plain
JAX function that ``jax.jit`` traces inside the larger step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.data import MinibatchOp
from pytensor.graph.basic import Constant
from pytensor.graph.fg import FunctionGraph
from pytensor.graph.replace import graph_replace
from pytensor.graph.traversal import io_toposort
from pytensor.tensor.elemwise import CAReduce

from bnn.inference.logp_gradient import flat_logp


@dataclass(frozen=True)
class BatchLogpGradient:
    """``function(w, *batch) -> (log p(w), ∇ log p(w))`` for the rows ``batch`` of ``data``.

    ``data`` are the full arrays that ``pm.Minibatch`` sliced (images, labels),
    in the order ``function`` takes their rows; ``batch_size`` is the number of
    rows it takes. A model without a minibatch has ``data == ()``.
    """

    function: Callable
    data: tuple[np.ndarray, ...]
    batch_size: int


def batch_logp_gradient(model: pm.Model, ordering: dict, dtype: str) -> BatchLogpGradient:
    """The model's log density and gradient in flat ``w`` (``ordering``), minibatch as input.

    Raises ``ValueError`` if the model's minibatches slice data that is not a constant.
    """
    from pytensor.link.jax.dispatch import jax_funcify

    # floatX as the weights' dtype: the rewrites' constants must not upcast the program.
    with pytensor.config.change_flags(floatX=dtype), warnings.catch_warnings():
        # PyMC's parameter checks (a hierarchical prior's scale > 0) cannot raise in a
        # jitted program, so JAX drops them; the scales are exp of free values, so they hold.
        warnings.filterwarnings("ignore", message=r"Skipping Check\{")
        flat, logp = flat_logp(model, ordering, dtype, numpy_kernels=False)
        logp, placeholders, data = minibatch_as_input(flat, logp)
        gradient = pt.grad(logp, flat)
        compiled = pytensor.function([flat, *placeholders], [logp, gradient], mode="JAX")
        fgraph = compiled.maker.fgraph
        same_dtype_sums(fgraph)
        function = jax_funcify(fgraph)
    batch_size = int(placeholders[0].type.shape[0]) if placeholders else 0
    return BatchLogpGradient(function, data, batch_size)


def minibatch_as_input(flat, logp) -> tuple[pt.TensorVariable, list, tuple[np.ndarray, ...]]:
    """``logp`` with its ``pm.Minibatch`` rows as placeholders: ``(logp, placeholders, data)``.

    ``data`` are the full arrays the minibatch slices, one per placeholder; a graph
    without a minibatch comes back unchanged, with no placeholders.
    """
    # model.logp() holds one clone of the Minibatch node per variable that reads it.
    minibatches = [n for n in io_toposort([flat], [logp]) if isinstance(n.op, MinibatchOp)]
    if not minibatches:
        return logp, [], ()
    sliced = minibatches[0].inputs[:-1]  # the last input is the random generator
    if not all(isinstance(variable, Constant) for variable in sliced):
        raise ValueError("the JAX step needs pm.Minibatch over constant arrays")
    data = tuple(np.asarray(variable.data) for variable in sliced)
    placeholders = [output.type() for output in minibatches[0].outputs[:-1]]
    replacements = {
        output: placeholder
        for node in minibatches
        for output, placeholder in zip(node.outputs[:-1], placeholders, strict=True)
    }
    return graph_replace(logp, replacements, strict=False), placeholders, data


def same_dtype_sums(fgraph: FunctionGraph) -> None:
    """Make every reduction accumulate in its output's dtype, in place.

    PyTensor sums float32 in a float64 accumulator and types the result float32;
    its JAX backend returns the accumulator's dtype instead, so one such sum turns
    the rest of the gradient graph float64 (and JAX warns when it is scattered back
    into the float32 gradient). Summing in the output's dtype keeps the program in
    the types PyTensor gave it.
    """
    for node in list(fgraph.toposort()):
        op, output = node.op, node.outputs[0]
        if isinstance(op, CAReduce) and getattr(op, "acc_dtype", None) not in (None, output.dtype):
            replacement = op.clone(acc_dtype=output.dtype)(*node.inputs)
            fgraph.replace(output, replacement, reason="same_dtype_sums")
