"""The BLAS thread count, pinned so that it is the same on every machine.

OpenBLAS splits a matrix product differently for different thread counts, and
the sums come out in another order: a tiny fit with one thread and with two
differs in the 8th significant digit. By default OpenBLAS starts one thread per
core, so a fit's numbers would depend on the machine's core count. The stages
that compute with the network pin it to :data:`BLAS_THREADS`, the count the
committed results were made with (2 cores). docs/reference.md, "Reproducibility",
has the measurements.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

# The committed metrics came from 2-core machines, where OpenBLAS ran 2 threads.
BLAS_THREADS = 2


def pin_blas_threads() -> threadpool_limits | None:
    """Limit every loaded BLAS library to :data:`BLAS_THREADS` threads; return the limiter.

    ``$OPENBLAS_NUM_THREADS``, when set, wins: OpenBLAS has read it already, and
    nothing is changed (``None`` is returned). threadpoolctl reaches only the
    libraries loaded so far, so call this after importing the library (NumPy's
    and SciPy's OpenBLAS). The limit lasts for the process, or until the
    limiter's ``restore_original_limits()``.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return None
    return threadpool_limits(limits=BLAS_THREADS, user_api="blas")
