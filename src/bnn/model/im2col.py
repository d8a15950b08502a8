"""im2col for channels-last images: plain NumPy, no PyTensor.

Shared by the training kernels (:mod:`bnn.model.conv_ops`) and the NumPy
forward pass of the posterior predictive (:mod:`bnn.predictive.forward`), which
serving uses and which must not load PyTensor.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def patch_matrix(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """im2col: (batch * out_h * out_w, k * k * channels), ordered (row, column, channel).

    ``images`` is channels-last, (batch, height, width, channels); the order matches
    a (k, k, channels, n_out) kernel flattened in C order.
    """
    windows = sliding_window_view(images, (kernel_size, kernel_size), axis=(1, 2))
    # (batch, out_h, out_w, channels, k, k) -> (batch, out_h, out_w, k, k, channels)
    windows = windows.transpose(0, 1, 2, 4, 5, 3)
    return np.ascontiguousarray(windows).reshape(-1, kernel_size * kernel_size * images.shape[3])


def tap_matrix(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """im2col transposed, for one channel: (k * k, batch * out_h * out_w).

    Row ``i * k + j`` is the images shifted by (i, j): one contiguous copy each,
    where :func:`patch_matrix` scatters every pixel into 25 columns.
    """
    batch, height, width, _ = images.shape
    out_h, out_w = height - kernel_size + 1, width - kernel_size + 1
    taps = np.empty((kernel_size * kernel_size, batch, out_h, out_w), images.dtype)
    for i in range(kernel_size):
        for j in range(kernel_size):
            taps[i * kernel_size + j] = images[:, i : i + out_h, j : j + out_w, 0]
    return taps.reshape(kernel_size * kernel_size, -1)


def patch_bytes(images: np.ndarray, kernel_size: int) -> int:
    """Bytes of one image's patch matrix."""
    _, height, width, channels = images.shape
    out_pixels = (height - kernel_size + 1) * (width - kernel_size + 1)
    return out_pixels * kernel_size**2 * channels * images.itemsize


def batch_blocks(batch: int, bytes_per_image: int, budget: int) -> list[slice]:
    """Slices of a batch whose per-image buffers together fit in ``budget`` bytes.

    Blocks keep each buffer in cache, and small enough to be reused by the
    allocator instead of mapped (and page-faulted) afresh.
    """
    size = max(1, budget // bytes_per_image)
    return [slice(first, min(first + size, batch)) for first in range(0, batch, size)]
