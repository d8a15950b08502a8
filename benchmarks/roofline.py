"""The roofline: this machine's matrix-product peak over the FLOPs of one ADVI step.

A step of minibatch ADVI is one forward pass and one backward pass of the
network at a sampled set of weights. Nearly all its FLOPs are matrix
products: each layer costs ``2 * batch * fan_in * fan_out`` forward and about
twice that backward (the gradients for the inputs and for the weights), so a
step is about three forward passes. A convolution is counted as the matrix
product im2col turns it into. Pooling and elementwise work are left out: the
roofline is the speed at which the matrix products alone would run at peak.
"""

from __future__ import annotations

import time

import numpy as np

from bnn.model.specs import ConvSpec, DenseSpec

BACKWARD_FACTOR = 3  # forward + gradient for inputs + gradient for weights


def advi_step_flops(spec: DenseSpec | ConvSpec, batch_size: int) -> float:
    """FLOPs of one ADVI step: a forward and a backward pass (see the module docstring)."""
    return BACKWARD_FACTOR * spec.forward_flops(batch_size)


def gemm_peak(dtype: str, size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` FLOP/s of NumPy's ``size`` x ``size`` matrix product in ``dtype``.

    NumPy's BLAS uses every core it is allowed, as PyTensor's does.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(dtype) for _ in range(2))
    a @ b  # warm-up: threads started, pages touched
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2.0 * size**3 / best


def roofline_it_per_s(spec: DenseSpec | ConvSpec, batch_size: int, peak_flops: float) -> float:
    """ADVI steps per second if every step's matrix products ran at ``peak_flops``."""
    return peak_flops / advi_step_flops(spec, batch_size)
