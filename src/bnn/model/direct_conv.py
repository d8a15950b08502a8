"""A direct 'valid' convolution and its gradients in C, for float32: no patch matrix.

For a fixed kernel row ``i``, the patch row of output position ``x`` is the
``k * c_in`` contiguous values ``image[y + i, x : x + k, :]``, and position
``x + 1``'s starts ``c_in`` values later. So the convolution is a product of
overlapping rows of the image itself with the kernel's rows: eight output
positions of 32 channels are held in sixteen 16-float registers while the
kernel rows stream past, and the im2col copy (25 times the input) is never
made. OpenBLAS's products with 32 columns, which the im2col route needs, run
at about half the core's peak; docs/speed.md has the measurements. The same
register blocking gives:

- :func:`conv_pool`: the convolution, its bias and its max-pool, a window's
  rows of maps at a time, so that the maps never reach memory; with the mask
  of each window's maxima that the gradients read;
- :func:`kernel_gradient`: a few values of a kernel row x 32 channels in
  registers while the gradient at every output position streams past;
- :func:`image_gradient`: each output row of the images' gradient gathers the
  gradient rows that reach it, times the kernel at each tap, in registers.

The kernel is compiled once per machine with the system's C compiler
(``$CC``, else ``cc``; ``-O3 -march=native``) into a cache folder
(``$BNN_NATIVE_CACHE``, else ``~/.cache/bnn/native``), the file named by a hash
of the source, flags, compiler and CPU, and written atomically. Where no
compiler works, or ``BNN_NATIVE=0``, :func:`available` is False and callers
keep the NumPy route; the two agree to float32 rounding, not bit for bit
(other sums in another order). It loads with :mod:`ctypes`, which releases the
GIL for the call, so blocks run in parallel on threads. It imports neither
PyTensor nor Numba, so serving can use it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# The output channels go 32 at a time (two 16-float vectors per position); a
# kernel with fewer or more is padded with zero columns to a multiple of 32.
PANEL = 32

SOURCE = r"""
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64), aligned(4)));

/* 16 ints to 16 bytes. GCC 12 moves a generic conversion's bytes one at a time through
   integer registers; AVX-512 has an instruction for it. */
#ifdef __AVX512F__
#include <immintrin.h>
static inline void store_bytes(unsigned char *to, v16i values) {
    _mm_storeu_si128((__m128i *)to, _mm512_cvtepi32_epi8((__m512i)values));
}
#else
typedef unsigned char v16b __attribute__((vector_size(16)));
static inline void store_bytes(unsigned char *to, v16i values) {
    v16b bytes = __builtin_convertvector(values, v16b);
    memcpy(to, &bytes, sizeof bytes);
}
#endif

/* R sums of 32 channels, two 16-float registers each; a constant R keeps them
   registers. ADD_TO_SUMS adds VALUE (an expression of r) times the 32 floats at
   ROW to sum r, for every r; STORE_SUMS writes sum r at OUT + r * STRIDE, or adds it
   to what is there where ADD is true. */
#define ZERO_SUMS(R)                                                                   \
    v16 lo[R], hi[R];                                                                  \
    for (int r = 0; r < R; r++) { lo[r] = (v16){0}; hi[r] = (v16){0}; }
#define ADD_TO_SUMS(R, VALUE, ROW)                                                     \
    {                                                                                  \
        v16 row0 = *(const v16 *)(ROW), row1 = *(const v16 *)((ROW) + 16);            \
        _Pragma("GCC unroll 8")                                                        \
        for (int r = 0; r < R; r++) {                                                  \
            float value = (VALUE);                                                     \
            lo[r] += value * row0;                                                     \
            hi[r] += value * row1;                                                     \
        }                                                                              \
    }
#define STORE_SUMS(R, OUT, STRIDE, ADD)                                                \
    for (int r = 0; r < R; r++) {                                                      \
        if (ADD) {                                                                     \
            lo[r] += *(v16 *)((OUT) + r * (STRIDE));                                   \
            hi[r] += *(v16 *)((OUT) + r * (STRIDE) + 16);                              \
        }                                                                              \
        *(v16 *)((OUT) + r * (STRIDE)) = lo[r];                                        \
        *(v16 *)((OUT) + r * (STRIDE) + 16) = hi[r];                                   \
    }

/* positions_R: R output positions x 32 output channels, summed over ROWS rows of
   ROW values: row i of the image at IMAGE + i * IMAGE_STEP (position r's values
   start CHANNELS later per r) against the ROW kernel rows at KERNEL + i * KERNEL_STEP.
   Written to OUT, or added to it with ADD. One function per R, so that the R x 2
   sums are registers, not memory. */
#define POSITIONS(R)                                                                   \
static void positions_##R(const float *image, const float *kernel, float *out,        \
                          long image_step, long kernel_step, long rows, long row,      \
                          long channels, long c_out, int add) {                        \
    ZERO_SUMS(R)                                                                       \
    for (long i = 0; i < rows; i++) {                                                  \
        const float *a = image + i * image_step;                                       \
        const float *k = kernel + i * kernel_step;                                     \
        for (long t = 0; t < row; t++)                                                 \
            ADD_TO_SUMS(R, a[r * channels + t], k + t * c_out)                         \
    }                                                                                  \
    STORE_SUMS(R, out, c_out, add)                                                     \
}
POSITIONS(1) POSITIONS(2) POSITIONS(3) POSITIONS(4)
POSITIONS(5) POSITIONS(6) POSITIONS(7) POSITIONS(8)

typedef void (*positions_fn)(const float *, const float *, float *, long, long, long, long,
                             long, long, int);
static const positions_fn POSITIONS_OF[9] = {
    0, positions_1, positions_2, positions_3, positions_4,
    positions_5, positions_6, positions_7, positions_8};

/* positions_R for one input channel and a 5 x 5 kernel (the first layer's): ROWS, ROW
   and CHANNELS are 5, 5 and 1, and the constant bounds unroll its 25 taps. A call has
   a 32nd of the second layer's arithmetic, and the generic loop's bookkeeping is then
   a large part of it. The same sums in the same order as positions_R's. */
#define SINGLE_CHANNEL_5X5(R)                                                          \
static void single_channel_5x5_##R(const float *image, const float *kernel, float *out, \
                                   long image_step, long kernel_step, long rows,       \
                                   long row, long channels, long c_out, int add) {     \
    (void)rows; (void)row; (void)channels;                                             \
    ZERO_SUMS(R)                                                                       \
    _Pragma("GCC unroll 5")                                                            \
    for (long i = 0; i < 5; i++) {                                                     \
        const float *a = image + i * image_step;                                       \
        const float *k = kernel + i * kernel_step;                                     \
        _Pragma("GCC unroll 5")                                                        \
        for (long t = 0; t < 5; t++)                                                   \
            ADD_TO_SUMS(R, a[r + t], k + t * c_out)                                    \
    }                                                                                  \
    STORE_SUMS(R, out, c_out, add)                                                     \
}
SINGLE_CHANNEL_5X5(1) SINGLE_CHANNEL_5X5(2) SINGLE_CHANNEL_5X5(3) SINGLE_CHANNEL_5X5(4)
SINGLE_CHANNEL_5X5(5) SINGLE_CHANNEL_5X5(6) SINGLE_CHANNEL_5X5(7) SINGLE_CHANNEL_5X5(8)

static const positions_fn SINGLE_CHANNEL_5X5_OF[9] = {
    0, single_channel_5x5_1, single_channel_5x5_2, single_channel_5x5_3, single_channel_5x5_4,
    single_channel_5x5_5, single_channel_5x5_6, single_channel_5x5_7, single_channel_5x5_8};

/* kernel_R: the kernel's gradient at R consecutive values of one kernel row
   (R rows of the patch matrix) x 32 output channels, summed over every output
   position: the gradient at the maps streams past while the sums stay in registers. */
#define KERNEL_ROWS(R)                                                                 \
static void kernel_rows_##R(const float *image, const float *gradient, float *out,    \
                            long n, long height, long width, long channels,            \
                            long out_h, long out_w, long c_out) {                      \
    ZERO_SUMS(R)                                                                       \
    for (long b = 0; b < n; b++) {                                                     \
        for (long y = 0; y < out_h; y++) {                                             \
            const float *a = image + ((b * height + y) * width) * channels;            \
            const float *g = gradient + ((b * out_h + y) * out_w) * c_out;             \
            for (long x = 0; x < out_w; x++)                                           \
                ADD_TO_SUMS(R, a[x * channels + r], g + x * c_out)                     \
        }                                                                              \
    }                                                                                  \
    STORE_SUMS(R, out, c_out, 0)                                                       \
}
KERNEL_ROWS(1) KERNEL_ROWS(2) KERNEL_ROWS(3) KERNEL_ROWS(4)
KERNEL_ROWS(5) KERNEL_ROWS(6) KERNEL_ROWS(7) KERNEL_ROWS(8)

typedef void (*kernel_rows_fn)(const float *, const float *, float *, long, long, long,
                               long, long, long, long);
static const kernel_rows_fn KERNEL_ROWS_OF[9] = {
    0, kernel_rows_1, kernel_rows_2, kernel_rows_3, kernel_rows_4,
    kernel_rows_5, kernel_rows_6, kernel_rows_7, kernel_rows_8};

/* out (size, size, channels, panels * 32): the gradient of conv_valid's kernel,
   sum over images and positions of patch value x gradient (n, h', w', panels * 32). */
void kernel_gradient(const float *images, const float *gradient, float *out, long n,
                     long height, long width, long channels, long size, long panels) {
    long out_h = height - size + 1, out_w = width - size + 1, c_out = panels * 32;
    long row = size * channels;
    for (long i = 0; i < size; i++)
        for (long p = 0; p < panels; p++)
            for (long t = 0; t < row; t += 8) {
                long rows = row - t < 8 ? row - t : 8;
                KERNEL_ROWS_OF[rows](images + i * width * channels + t, gradient + p * 32,
                                     out + (i * row + t) * c_out + p * 32, n, height, width,
                                     channels, out_h, out_w, c_out);
            }
}

/* out (n, height, width, panels * 32): the gradient of conv_valid's images, from
   gradient (n, h', w', c_out) at its maps and flipped (size, size, c_out, panels * 32),
   the kernel with its channel axes swapped. Output row y at tap column j gathers
   every gradient row y - i (i a kernel row that reaches it) times the kernel at
   tap (i, j), 8 positions x 32 channels in registers, then adds them to the
   output shifted by j. */
void image_gradient(const float *gradient, const float *flipped, float *out, long n,
                    long height, long width, long c_out, long size, long panels) {
    long out_h = height - size + 1, out_w = width - size + 1, c_in = panels * 32;
    for (long b = 0; b < n; b++)
        for (long y = 0; y < height; y++) {
            long first = y - out_h + 1 > 0 ? y - out_h + 1 : 0, last = y < size - 1 ? y : size - 1;
            /* gradient rows y - first, y - first - 1, ...: a negative step */
            const float *rows = gradient + ((b * out_h + y - first) * out_w) * c_out;
            for (long j = 0; j < size; j++) {
                const float *tap = flipped + (first * size + j) * c_out * c_in;
                float *target = out + ((b * height + y) * width + j) * c_in;
                for (long p = 0; p < panels; p++)
                    for (long x = 0; x < out_w; x += 8) {
                        long count = out_w - x < 8 ? out_w - x : 8;
                        POSITIONS_OF[count](rows + x * c_out, tap + p * 32,
                                            target + x * c_in + p * 32, -out_w * c_out,
                                            size * c_out * c_in, last - first + 1, c_out, c_out,
                                            c_in, 1);
                    }
            }
        }
}

/* One row of maps, (out_w, panels * 32), from the image rows that start at IMAGE. */
static void map_row(const float *image, const float *kernel, float *maps, long width,
                    long channels, long size, long panels) {
    long out_w = width - size + 1, c_out = panels * 32;
    const positions_fn *positions =
        channels == 1 && size == 5 ? SINGLE_CHANNEL_5X5_OF : POSITIONS_OF;
    for (long p = 0; p < panels; p++)
        for (long x = 0; x < out_w; x += 8) {
            long rows = out_w - x < 8 ? out_w - x : 8;
            positions[rows](image + x * channels, kernel + p * 32, maps + x * c_out + p * 32,
                               width * channels, size * channels * c_out, size, size * channels,
                               channels, c_out, 0);
        }
}

/* out (n, h - size + 1, w - size + 1, panels * 32) from images (n, h, w, channels)
   and kernel (size, size, channels, panels * 32), all C-contiguous float32. */
void conv_valid(const float *images, const float *kernel, float *out, long n, long height,
                long width, long channels, long size, long panels) {
    long out_h = height - size + 1, out_w = width - size + 1, c_out = panels * 32;
    for (long b = 0; b < n; b++)
        for (long y = 0; y < out_h; y++)
            map_row(images + ((b * height + y) * width) * channels, kernel,
                    out + ((b * out_h + y) * out_w) * c_out, width, channels, size, panels);
}

/* One window of POOL x POOL maps (its first pixel at MAPS, rows STRIDE floats apart):
   best = the maximum of maps + bias over the window, per channel; bit d of bits
   (where given) set where window pixel d, row-major, equals it. A NaN wins its
   window and then no pixel equals it: bits 0. The same rules as the Numba pool
   (bnn.model.conv_pool_ops._pool_with_bias), value for value. 16 channels at a
   time in registers; c_out is a multiple of 32. */
static void pool_window(const float *maps, long stride, const float *bias, float *best,
                        unsigned char *bits, long c_out, long pool) {
    for (long c = 0; c < c_out; c += 16) {
        v16 shift = *(const v16 *)(bias + c);
        v16 top = *(const v16 *)(maps + c) + shift;
        v16i mask = (top == top) & 1;
        for (long d = 1; d < pool * pool; d++) {
            v16 value = *(const v16 *)(maps + (d / pool) * stride + (d % pool) * c_out + c) + shift;
            v16i wins = (value > top) | (value != value), bit = (v16i){0} + (d < 8 ? 1 << d : 0);
            top = (v16)(((v16i)value & wins) | ((v16i)top & ~wins));
            mask = (wins & (value == value) & bit) | (~wins & (mask | ((value == top) & bit)));
        }
        *(v16 *)(best + c) = top;
        if (bits) store_bytes(bits + c, mask);
    }
}

/* pooled (n, h' / pool, w' / pool, panels * 32): the max-pool of conv_valid + bias,
   made POOL rows of maps at a time, so that the maps at full resolution never leave
   the cache; bits (the same shape, one byte each, or NULL) as pool_window's, where
   POOL * POOL is at most 8. POOL divides the maps. Returns 0, or -1 where no row buffer was had. */
int conv_pool(const float *images, const float *kernel, const float *bias, float *pooled,
              unsigned char *bits, long n, long height, long width, long channels, long size,
              long panels, long pool) {
    long out_w = width - size + 1, c_out = panels * 32;
    long pooled_h = (height - size + 1) / pool, pooled_w = out_w / pool;
    float *rows = malloc(sizeof(float) * pool * out_w * c_out);
    if (!rows) return -1;
    for (long b = 0; b < n; b++)
        for (long ph = 0; ph < pooled_h; ph++) {
            for (long r = 0; r < pool; r++)
                map_row(images + ((b * height + ph * pool + r) * width) * channels, kernel,
                        rows + r * out_w * c_out, width, channels, size, panels);
            long first = ((b * pooled_h + ph) * pooled_w) * c_out;
            for (long pw = 0; pw < pooled_w; pw++)
                pool_window(rows + pw * pool * c_out, out_w * c_out, bias,
                            pooled + first + pw * c_out, bits ? bits + first + pw * c_out : 0,
                            c_out, pool);
        }
    free(rows);
    return 0;
}
"""
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
if platform.machine() in ("x86_64", "AMD64"):
    # GCC tunes loops for 256-bit vectors on AVX-512 CPUs unless told otherwise.
    FLAGS += ("-mprefer-vector-width=512",)


def available() -> bool:
    """Whether the C kernel is compiled and loaded (``BNN_NATIVE=0`` turns it off)."""
    return os.environ.get("BNN_NATIVE", "1") != "0" and _library() is not None


def conv_valid(images: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """'Valid' convolution: (n, h - k + 1, w - k + 1, c_out) float32.

    Parameters
    ----------
    images : ndarray
        Shape (n, h, w, c_in), float32, channels last.
    kernel : ndarray
        Shape (k, k, c_in, c_out), float32.
    out : ndarray, optional
        Where to write the maps, C-contiguous float32 of the result's shape.

    Call only where :func:`available` is True.
    """
    n, height, width, channels = images.shape
    size, _, _, c_out = kernel.shape
    panels = -(-c_out // PANEL)
    padded = _padded(kernel, panels)
    maps = _output(out, (n, height - size + 1, width - size + 1, c_out), panels, np.float32, "out")
    _library().conv_valid(
        _pointer(_floats(images)), _pointer(padded), _pointer(maps), n, height, width, channels,
        size, panels,
    )  # fmt: skip
    return _unpadded(maps, c_out, out)


# A window's maxima are one byte of bits in :func:`conv_pool`: windows up to 2 x 2.
MASK_BITS = 8


def conv_pool(
    images: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray,
    pool_size: int,
    out: np.ndarray | None = None,
    maxima: np.ndarray | None = None,
) -> np.ndarray:
    """``max_pool(conv_valid(images, kernel) + bias)``: (n, h' / pool, w' / pool, c_out) float32.

    The maps are made ``pool_size`` rows at a time and pooled at once, so they
    never reach memory. Where ``maxima`` is given (uint8, the pooled shape) it
    receives each window's mask: bit ``d`` set where window pixel ``d``
    (row-major) equals the window's maximum, so that ties all get the gradient;
    a NaN wins its window and sets no bit. These are the rules, and the values,
    of :func:`bnn.model.conv_pool_ops._pool_with_bias` on :func:`conv_valid`'s maps.

    Parameters
    ----------
    images, kernel : ndarray
        As :func:`conv_valid`'s; the maps must divide by ``pool_size``.
    bias : ndarray
        Shape (c_out,), float32.
    pool_size : int
        The window's side; with ``maxima``, ``pool_size**2`` at most :data:`MASK_BITS`.
    out : ndarray, optional
        Where to write the pooled maps, C-contiguous float32 of the result's shape.
    maxima : ndarray, optional
        Where to write the masks, C-contiguous uint8 of the result's shape.

    Call only where :func:`available` is True.
    """
    n, height, width, channels = images.shape
    size, _, _, c_out = kernel.shape
    maps_h, maps_w = height - size + 1, width - size + 1
    if maps_h % pool_size or maps_w % pool_size:
        raise ValueError(f"{maps_h}x{maps_w} maps do not divide by pool_size={pool_size}")
    if maxima is not None and pool_size**2 > MASK_BITS:
        raise ValueError(f"a byte of maxima holds windows up to 2x2, got pool_size={pool_size}")
    panels = -(-c_out // PANEL)
    shape = (n, maps_h // pool_size, maps_w // pool_size, c_out)
    pooled = _output(out, shape, panels, np.float32, "out")
    mask = None if maxima is None else _output(maxima, shape, panels, np.uint8, "maxima")
    status = _library().conv_pool(
        _pointer(_floats(images)), _pointer(_padded(kernel, panels)),
        _pointer(_padded(bias, panels)), _pointer(pooled), None if mask is None else _pointer(mask),
        n, height, width, channels, size, panels, pool_size,
    )  # fmt: skip
    if status:
        raise MemoryError("conv_pool: no memory for a row of maps")
    if mask is not None:
        _unpadded(mask, c_out, maxima)
    return _unpadded(pooled, c_out, out)


def kernel_gradient(images: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The gradient of :func:`conv_valid`'s kernel: (k, k, c_in, c_out) float32.

    Parameters
    ----------
    images : ndarray
        Shape (n, h, w, c_in), float32, channels last.
    gradient : ndarray
        The gradient at the maps, (n, h - k + 1, w - k + 1, c_out), float32.

    Each value is one float32 sum over every image and position. Call only
    where :func:`available` is True.
    """
    n, height, width, channels = images.shape
    size, c_out = height - gradient.shape[1] + 1, gradient.shape[3]
    panels = -(-c_out // PANEL)
    out = np.empty((size, size, channels, panels * PANEL), np.float32)
    _library().kernel_gradient(
        _pointer(_floats(images)), _pointer(_padded(gradient, panels)), _pointer(out), n, height,
        width, channels, size, panels,
    )  # fmt: skip
    return _unpadded(out, c_out, None)


def image_gradient(
    gradient: np.ndarray, kernel: np.ndarray, image_shape: tuple, out: np.ndarray | None = None
) -> np.ndarray:
    """The gradient of :func:`conv_valid`'s images: ``image_shape`` (n, h, w, c_in), float32.

    Parameters
    ----------
    gradient : ndarray
        The gradient at the maps, (n, h - k + 1, w - k + 1, c_out), float32.
    kernel : ndarray
        The forward pass's, (k, k, c_in, c_out), float32.
    image_shape : tuple
        The images' shape.
    out : ndarray, optional
        Where to write the gradient, C-contiguous float32 of ``image_shape``.

    Each output position's gradient times the kernel is added to its patch: the
    same sums as im2col's transposed product, in another order. Call only where
    :func:`available` is True.
    """
    n, height, width, c_in = image_shape
    size, _, _, c_out = kernel.shape
    panels = -(-c_in // PANEL)
    flipped = _padded(kernel.transpose(0, 1, 3, 2), panels)  # (k, k, c_out, c_in)
    sums = _output(out, tuple(image_shape), panels, np.float32, "out")
    sums[...] = 0  # the C loop adds each tap's products to it
    _library().image_gradient(
        _pointer(_floats(gradient)), _pointer(flipped), _pointer(sums), n, height, width, c_out,
        size, panels,
    )  # fmt: skip
    return _unpadded(sums, c_in, out)


def _floats(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _padded(array: np.ndarray, panels: int) -> np.ndarray:
    """``array`` in float32, C-contiguous, its last axis padded with zeros to ``panels`` x 32."""
    if array.shape[-1] == panels * PANEL:
        return _floats(array)
    padded = np.zeros((*array.shape[:-1], panels * PANEL), np.float32)
    padded[..., : array.shape[-1]] = array
    return padded


def _output(out: np.ndarray | None, shape: tuple, panels: int, dtype, name: str) -> np.ndarray:
    """Where a C loop writes a result of ``shape``: ``out`` itself where no channel is padded.

    Otherwise a new array with the padded channels, which :func:`_unpadded` cuts.
    """
    if out is not None and (out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous):
        raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype)} of shape {shape}")
    if out is not None and shape[-1] == panels * PANEL:
        return out
    return np.empty((*shape[:-1], panels * PANEL), dtype)


def _unpadded(result: np.ndarray, channels: int, out: np.ndarray | None) -> np.ndarray:
    """``result`` without its padded channels, written into ``out`` where one was given."""
    if result is out or (out is None and result.shape[-1] == channels):
        return result
    if out is None:
        return np.ascontiguousarray(result[..., :channels])
    out[...] = result[..., :channels]
    return out


def _pointer(array: np.ndarray) -> ctypes.c_void_p:
    return array.ctypes.data_as(ctypes.c_void_p)


@functools.cache
def _library() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC", "cc")
    try:
        path = _compiled(compiler)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", None) or error
        log.warning("direct convolution not compiled (%s); using im2col: %s", compiler, detail)
        return None
    for function in (library.conv_valid, library.kernel_gradient, library.image_gradient):
        function.restype = None
        function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 6
    library.conv_pool.restype = ctypes.c_int
    library.conv_pool.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_long] * 7
    return library


def _compiled(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    key = "\n".join([SOURCE, *FLAGS, version.stdout, platform.machine(), _cpu_model()])
    folder = Path(os.environ.get("BNN_NATIVE_CACHE") or Path.home() / ".cache" / "bnn" / "native")
    path = folder / f"direct_conv-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        source, built = Path(scratch) / "direct_conv.c", Path(scratch) / path.name
        source.write_text(SOURCE)
        command = [compiler, *FLAGS, "-o", str(built), str(source)]
        subprocess.run(command, capture_output=True, text=True, check=True)
        os.replace(built, path)  # atomic: another process sees the whole file or none
    return path


def _cpu_model() -> str:
    # -march=native builds for this CPU; a cache folder shared between machines
    # (a home on a network drive) must not hand one CPU's build to another.
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    first = lambda field: next((line for line in lines if line.startswith(field)), "")  # noqa: E731
    return first("model name") + first("flags")
