"""A direct 'valid' convolution and its kernel's gradient in C, for float32: no patch matrix.

For a fixed kernel row ``i``, the patch row of output position ``x`` is the
``k * c_in`` contiguous values ``image[y + i, x : x + k, :]``, and position
``x + 1``'s starts ``c_in`` values later. So the convolution is a product of
overlapping rows of the image itself with the kernel's rows: eight output
positions of 32 channels are held in sixteen 16-float registers while the
kernel rows stream past, and the im2col copy (25 times the input) is never
made. OpenBLAS's products with 32 columns, which the im2col route needs, run
at about half the core's peak; docs/speed.md has the measurements. The
kernel's gradient is the same loop with the roles turned: a few values of a
kernel row x 32 channels in registers while the gradient at every output
position streams past (:func:`kernel_gradient`).

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
typedef float v16 __attribute__((vector_size(64), aligned(4)));

/* R sums of 32 channels, two 16-float registers each; a constant R keeps them
   registers. ADD_TO_SUMS adds VALUE (an expression of r) times the 32 floats at
   ROW to sum r, for every r; STORE_SUMS writes sum r at OUT + r * STRIDE. */
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
#define STORE_SUMS(R, OUT, STRIDE)                                                     \
    for (int r = 0; r < R; r++) {                                                      \
        *(v16 *)((OUT) + r * (STRIDE)) = lo[r];                                        \
        *(v16 *)((OUT) + r * (STRIDE) + 16) = hi[r];                                   \
    }

/* positions_R: R output positions x 32 output channels, summed over every kernel
   row. One function per R, so that the R x 2 sums are registers, not memory. */
#define POSITIONS(R)                                                                   \
static void positions_##R(const float *image, const float *kernel, float *out,        \
                          long width, long channels, long size, long c_out) {          \
    long row = size * channels;                                                        \
    ZERO_SUMS(R)                                                                       \
    for (long i = 0; i < size; i++) {                                                  \
        const float *a = image + i * width * channels;                                 \
        const float *k = kernel + i * row * c_out;                                     \
        for (long t = 0; t < row; t++)                                                 \
            ADD_TO_SUMS(R, a[r * channels + t], k + t * c_out)                         \
    }                                                                                  \
    STORE_SUMS(R, out, c_out)                                                          \
}
POSITIONS(1) POSITIONS(2) POSITIONS(3) POSITIONS(4)
POSITIONS(5) POSITIONS(6) POSITIONS(7) POSITIONS(8)

typedef void (*positions_fn)(const float *, const float *, float *, long, long, long, long);
static const positions_fn POSITIONS_OF[9] = {
    0, positions_1, positions_2, positions_3, positions_4,
    positions_5, positions_6, positions_7, positions_8};

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
    STORE_SUMS(R, out, c_out)                                                          \
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

/* out (n, h - size + 1, w - size + 1, panels * 32) from images (n, h, w, channels)
   and kernel (size, size, channels, panels * 32), all C-contiguous float32. */
void conv_valid(const float *images, const float *kernel, float *out, long n, long height,
                long width, long channels, long size, long panels) {
    long out_h = height - size + 1, out_w = width - size + 1, c_out = panels * 32;
    for (long b = 0; b < n; b++) {
        for (long y = 0; y < out_h; y++) {
            const float *image = images + ((b * height + y) * width) * channels;
            float *maps = out + ((b * out_h + y) * out_w) * c_out;
            for (long p = 0; p < panels; p++) {
                for (long x = 0; x < out_w; x += 8) {
                    long rows = out_w - x < 8 ? out_w - x : 8;
                    POSITIONS_OF[rows](image + x * channels, kernel + p * 32,
                                       maps + x * c_out + p * 32, width, channels, size, c_out);
                }
            }
        }
    }
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
    library = _library()
    n, height, width, channels = images.shape
    size, _, _, c_out = kernel.shape
    panels = -(-c_out // PANEL)
    images = np.ascontiguousarray(images, dtype=np.float32)
    padded = np.zeros((size, size, channels, panels * PANEL), np.float32)
    padded[..., :c_out] = kernel
    shape = (n, height - size + 1, width - size + 1, panels * PANEL)
    maps = out if out is not None and c_out == panels * PANEL else np.empty(shape, np.float32)
    if maps.shape != shape or maps.dtype != np.float32 or not maps.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {shape}")
    library.conv_valid(
        _pointer(images), _pointer(padded), _pointer(maps), n, height, width, channels, size, panels
    )
    if c_out == panels * PANEL:
        return maps
    if out is None:
        return np.ascontiguousarray(maps[..., :c_out])
    out[...] = maps[..., :c_out]
    return out


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
    library = _library()
    n, height, width, channels = images.shape
    size = height - gradient.shape[1] + 1
    c_out = gradient.shape[3]
    panels = -(-c_out // PANEL)
    images = np.ascontiguousarray(images, dtype=np.float32)
    if c_out == panels * PANEL:
        gradient = np.ascontiguousarray(gradient, dtype=np.float32)
    else:
        gradient = np.concatenate(
            [gradient, np.zeros((*gradient.shape[:3], panels * PANEL - c_out), np.float32)], axis=3
        )
    out = np.empty((size, size, channels, panels * PANEL), np.float32)
    library.kernel_gradient(
        _pointer(images),
        _pointer(gradient),
        _pointer(out),
        n,
        height,
        width,
        channels,
        size,
        panels,
    )
    return out if c_out == panels * PANEL else np.ascontiguousarray(out[..., :c_out])


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
    for function in (library.conv_valid, library.kernel_gradient):
        function.restype = None
        function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 6
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
