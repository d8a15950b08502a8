"""Layers as graph constructors.

Each layer takes a symbolic input and a prior family, asks the prior for its
weights by systematic names (``{layer}_W``, ``{layer}_b``) and returns the
symbolic output.
"""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.tensor import TensorVariable

from bnn.model.conv_ops import ConvGraph, PoolGraph
from bnn.model.priors import PriorFamily


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
    return activate(pt.dot(inputs, weights) + bias, activation)


def image_patches(inputs: TensorVariable, kernel_size: int, height: int, width: int):
    """All ``kernel_size`` x ``kernel_size`` patches of channels-last images, one row each.

    Returns shape (batch * out_h * out_w, kernel_size**2 * channels), ordered
    (row offset, column offset, channel) to match a kernel of shape
    (kernel_size, kernel_size, channels, n_out) flattened in C order: the
    im2col layout, so a convolution becomes one matrix product.
    """
    out_h, out_w = height - kernel_size + 1, width - kernel_size + 1
    shifted = [
        inputs[:, row : row + out_h, col : col + out_w, :]
        for row in range(kernel_size)
        for col in range(kernel_size)
    ]
    patches = pt.stack(shifted, axis=3)  # (batch, out_h, out_w, k*k, channels)
    return patches.reshape((-1, kernel_size * kernel_size * inputs.shape[-1]))


def conv2d(
    name: str,
    inputs: TensorVariable,
    in_shape: tuple[int, int, int],
    n_out: int,
    kernel_size: int,
    prior: PriorFamily,
    activation: str = "linear",
) -> TensorVariable:
    """A 'valid' 2-D convolution of channels-last images, as im2col and one GEMM.

    Parameters
    ----------
    name : str
        Layer name; the weights are ``{name}_W`` (k, k, c_in, n_out) and ``{name}_b`` (n_out,).
    inputs : TensorVariable
        Images of shape (batch, height, width, c_in).
    in_shape : tuple of int
        (height, width, c_in), known when the network is built.
    n_out : int
        Number of filters.
    kernel_size : int
        Side of the square kernel.
    prior : PriorFamily
        Where the weights come from.
    activation : {"tanh", "linear"}
        Nonlinearity applied to the output. The default is "linear".
    """
    n_in = in_shape[2]
    weights = prior(f"{name}_W", (kernel_size, kernel_size, n_in, n_out))
    bias = prior(f"{name}_b", (n_out,))
    return activate(convolve(inputs, weights, in_shape, kernel_size) + bias, activation)


def convolve(inputs, weights, in_shape: tuple[int, int, int], kernel_size: int):
    """``inputs`` (batch, h, w, c) convolved ('valid') with ``weights`` (k, k, c, n_out).

    im2col and one GEMM, wrapped in a :class:`bnn.model.conv_ops.ConvGraph`: inlined by
    every backend, and swapped for NumPy kernels by the fused ADVI engine.
    """
    height, width, n_in = in_shape
    images = pt.tensor4("images", dtype=inputs.dtype)
    kernel = pt.tensor4("kernel", dtype=weights.dtype)
    patches = image_patches(images, kernel_size, height, width)
    outputs = pt.dot(patches, kernel.reshape((kernel_size * kernel_size * n_in, -1)))
    out_shape = (-1, height - kernel_size + 1, width - kernel_size + 1, kernel.shape[3])
    return ConvGraph([images, kernel], [outputs.reshape(out_shape)], inline=True)(inputs, weights)


def max_pool(inputs: TensorVariable, in_shape: tuple[int, int, int], size: int) -> TensorVariable:
    """Non-overlapping ``size`` x ``size`` max-pooling of channels-last images.

    A reshape and a max: each pooling window becomes two axes of its own.
    Height and width must be multiples of ``size``. Wrapped in a
    :class:`bnn.model.conv_ops.PoolGraph`, like :func:`convolve`.
    """
    height, width, channels = in_shape
    images = pt.tensor4("images", dtype=inputs.dtype)
    windows = images.reshape((-1, height // size, size, width // size, size, channels))
    pool = PoolGraph([images], [windows.max(axis=(2, 4))], inline=True)
    pool.pool_size = size
    return pool(inputs)


def activate(outputs: TensorVariable, activation: str) -> TensorVariable:
    """``activation`` ("tanh" or "linear") applied elementwise."""
    if activation == "tanh":
        return pt.tanh(outputs)
    if activation == "linear":
        return outputs
    raise ValueError(f"unknown activation {activation!r}; use 'tanh' or 'linear'")
