"""The PyMC model's log density and its gradient at one flat point, compiled for speed.

The fused ADVI step (:mod:`bnn.inference.fused`) needs, at the drawn weights ``w``,
``log p(w)`` and ``∇ log p(w)`` of the model exactly as PyMC defines them
(``model.logp()``: priors, Jacobians, the minibatch likelihood scaled by
``total_size``), with ``w`` one flat vector in the approximation's own ordering.
Three choices make that function faster here (``scripts/step_phases.py``; dense
net: 26 ms in PyTensor's default mode, 17 ms here):

- **PyTensor's C backend with NumPy kernels.** The C backend's ``tanh`` is a
  scalar libm call (5 ms per 500 x 800 layer); NumPy's is SIMD (0.06 ms).
  :class:`NumpyTanh` swaps it in, and the conv net's convolutions and pools go to
  :mod:`bnn.model.conv_ops`; a convolution, its bias and its pool become one
  op (:mod:`bnn.model.conv_pool_ops`, :func:`fuse_conv_pool`).
  The C virtual machine runs their Python ``perform``
  directly; PyTensor 3's default backend, Numba, would run them in object mode.
- **No garbage collection between calls** (``cvm_nogc``): buffers stay allocated
  instead of being mapped and page-faulted afresh every step.
- **No ``Gemm`` fusion.** A pip-installed PyTensor links no BLAS, so its ``Gemm``
  falls back to a slow path: 6.3 ms for each of the dense net's weight-gradient
  products, where ``Dot22`` (NumPy's ``dot``) takes 2.8 ms for one of the same size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.graph.replace import graph_replace
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.graph.rewriting.utils import rewrite_graph
from pytensor.scalar.basic import Add, Tanh
from pytensor.tensor.elemwise import Elemwise

from bnn.model.conv_ops import (
    Conv2dInputGrad,
    Conv2dKernelGrad,
    Conv2dValid,
    ConvGraph,
    MaxPool2d,
    PoolGraph,
)
from bnn.model.conv_pool_ops import ConvBiasPool, ConvBiasPoolGrad, ConvBiasPoolImageGrad

# The ops that spread blocks of images over the cores (bnn.core.threads.ordered_map).
BLOCKED_OPS = (
    Conv2dValid,
    Conv2dInputGrad,
    Conv2dKernelGrad,
    ConvBiasPool,
    ConvBiasPoolGrad,
    ConvBiasPoolImageGrad,
)

# C backend, the usual rewrites, minus the Gemm fusion (see the module docstring).
FAST_CPU_MODE = Mode(linker="cvm_nogc", optimizer="fast_run").excluding("gemm_optimizer")


class NumpyTanh(Op):
    """``tanh`` computed by NumPy (vectorised), with the usual gradient ``g (1 - y²)``."""

    __props__ = ()

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, output_storage):
        output_storage[0][0] = np.tanh(inputs[0])

    def pullback(self, inputs, outputs, cotangents):
        (y,) = outputs
        return [cotangents[0] * (1 - y * y)]

    def infer_shape(self, node, input_shapes):
        return input_shapes


@node_rewriter([Elemwise])
def numpy_tanh(fgraph, node):
    """Replace an elementwise ``tanh`` with :class:`NumpyTanh`."""
    if isinstance(node.op.scalar_op, Tanh):
        return [NumpyTanh()(node.inputs[0])]
    return None


@node_rewriter([ConvGraph, PoolGraph])
def numpy_conv(fgraph, node):
    """Replace a conv layer's convolution or pooling graph with its NumPy kernel."""
    if isinstance(node.op, PoolGraph):
        return [MaxPool2d(node.op.pool_size)(*node.inputs)]
    return [Conv2dValid()(*node.inputs)]


@node_rewriter([PoolGraph])
def fuse_conv_pool(fgraph, node):
    """A rewrite: ``max_pool(conv(images, kernel) + bias)`` -> :class:`ConvBiasPool`.

    It applies where nothing else reads the convolution or its sum with the
    bias: only the pooled maps are kept (and the mask the gradients read).
    """
    summed = node.inputs[0]
    add = summed.owner
    if not (
        add is not None
        and isinstance(add.op, Elemwise)
        and isinstance(add.op.scalar_op, Add)
        and len(add.inputs) == 2
        and len(fgraph.clients[summed]) == 1
    ):
        return None
    for conv, bias in (add.inputs, add.inputs[::-1]):
        if not (conv.owner is not None and isinstance(conv.owner.op, ConvGraph)):
            continue
        images, kernel = conv.owner.inputs
        per_channel = bias.type.broadcastable == (True, True, True, False)
        if per_channel and len(fgraph.clients[conv]) == 1:
            pooled, _ = ConvBiasPool(node.op.pool_size)(images, kernel, bias.flatten())
            return [pooled]
    return None


def flat_logp(model: pm.Model, ordering: dict, dtype: str, numpy_kernels: bool = True):
    """``(w, log p(w))``: the model's log density of one flat vector ``w``.

    ``ordering`` maps each value variable's name to ``(name, slice, shape, dtype)``,
    as a ``pm.MeanField`` group orders them. ``numpy_kernels`` swaps in
    :class:`NumpyTanh` and the conv net's NumPy kernels (:mod:`bnn.model.conv_ops`,
    :mod:`bnn.model.conv_pool_ops`).
    """
    size = sum(where.stop - where.start for _, where, _, _ in ordering.values())
    flat = pt.vector("w", dtype=dtype, shape=(size,))
    pieces = {}
    for value in model.value_vars:
        _, where, shape, _ = ordering[value.name]
        pieces[value] = flat[where].reshape(shape).astype(value.dtype)
    logp = graph_replace(model.logp(), pieces, strict=False)
    if not numpy_kernels:
        return flat, logp
    # Fusing first: it matches the model's own conv and pool graphs.
    logp = rewrite_graph(logp, custom_rewrite=in2out(fuse_conv_pool), include=())
    return flat, rewrite_graph(logp, custom_rewrite=in2out(numpy_tanh, numpy_conv), include=())


def compile_logp_gradient(
    model: pm.Model,
    ordering: dict,
    dtype: str,
    seed: int,
    numpy_kernels: bool = True,
    mode=FAST_CPU_MODE,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function ``w -> (log p(w), ∇ log p(w))`` for flat ``w`` in ``ordering``.

    Each call draws the next minibatch (``pm.Minibatch``'s random rows), from a
    generator seeded with ``seed``. ``numpy_kernels`` and ``mode`` are the levers
    ``scripts/step_phases.py`` compares; the defaults are the fast ones.
    """
    flat, logp = flat_logp(model, ordering, dtype, numpy_kernels)
    gradient = pt.grad(logp, flat)
    with warnings.catch_warnings():
        # PyTensor warns that it links no BLAS. Without Gemm its matrix products are
        # NumPy's (OpenBLAS): the dense net's call takes 17 ms where the GEMM peak
        # allows 15 (bnn.roofline), so the warning does not apply here.
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        return pm.compile(
            [pytensor.In(flat, borrow=True)],
            [logp, gradient],
            random_seed=seed,
            mode=mode,
        )


def runs_in_blocks(function) -> bool:
    """Whether a compiled function's time goes to blocked ops (a conv net's).

    Such a function runs best inside :func:`bnn.core.threads.cores_for_blocks`.
    """
    return any(isinstance(node.op, BLOCKED_OPS) for node in function.maker.fgraph.apply_nodes)
