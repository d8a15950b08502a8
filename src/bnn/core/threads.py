"""Threads: the BLAS thread count, pinned; and blocks of work spread over the cores.

OpenBLAS splits a matrix product differently for different thread counts, and
the sums come out in another order: a tiny fit with one thread and with two
differs in the 8th significant digit. By default OpenBLAS starts one thread per
core, so a fit's numbers would depend on the machine's core count. The stages
that compute with the network pin it to :data:`BLAS_THREADS`, the count the
committed results were made with (2 cores). docs/reference.md, "Reproducibility",
has the measurements.

Work that splits into independent blocks (the posterior predictive's blocks of
draws x images) runs better as one block per core, each with one BLAS thread
(:func:`ordered_map`): the single-threaded passes between matrix products
(im2col, pooling) then use every core too, and no idle OpenBLAS thread spins
beside them. Each block is computed by one thread whichever it is, so the
results do not depend on the number of cores.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

from threadpoolctl import ThreadpoolController, threadpool_limits

# The committed metrics came from 2-core machines, where OpenBLAS ran 2 threads.
BLAS_THREADS = 2
# Set by cores_for_blocks: how many threads ordered_map runs while BLAS runs one.
_block_workers: ContextVar[int | None] = ContextVar("block_workers", default=None)


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


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.cache
def blas_controller() -> ThreadpoolController:
    """One controller of the BLAS libraries loaded by the first call, for the process.

    Making a controller scans every loaded library, which costs as much as a
    small block of work; the conv kernels map their blocks several times a step.
    """
    return ThreadpoolController()


def blas_thread_count(controller: ThreadpoolController) -> int:
    """The threads the loaded BLAS libraries run now.

    That is a stage's pin, ``$OPENBLAS_NUM_THREADS`` or OpenBLAS's own default;
    :func:`available_cores` where no BLAS is loaded yet.
    """
    counts = [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
    return max(counts, default=available_cores())


@contextmanager
def cores_for_blocks(workers: int | None = None) -> Iterator[int]:
    """Within: BLAS runs one thread, and :func:`ordered_map` runs ``workers`` threads.

    For work that is mostly blocks (a conv net's step): OpenBLAS's own worker
    threads then never start, so none spins beside the blocks' threads between
    two products. ``workers`` defaults to the BLAS thread count in force on
    entry (a stage's pin); the count in force comes back on exit. Yields ``workers``.
    """
    controller = blas_controller()
    workers = workers or blas_thread_count(controller)
    token = _block_workers.set(workers)
    try:
        with controller.limit(limits=1, user_api="blas"):
            yield workers
    finally:
        _block_workers.reset(token)


def ordered_map[Item, Result](
    function: Callable[[Item], Result], items: Iterable[Item], workers: int | None = None
) -> Iterator[Result]:
    """``function(item)`` for each item, computed on ``workers`` threads, yielded in order.

    BLAS runs one thread per call meanwhile (restored when the iterator ends or
    is closed). At most two blocks per worker are in flight, so memory stays
    bounded; closing the iterator early (an interrupt) cancels those not
    started. ``function`` must release the GIL for its heavy work (NumPy and
    BLAS do, Numba with ``nogil=True``). ``workers`` defaults to the BLAS thread
    count in force (:func:`blas_thread_count`), so a process allotted 2 CPUs (a
    pinned stage, a Ray job) uses 2 workers, or to the count of an enclosing
    :func:`cores_for_blocks`; with one, the items run in the calling thread.
    """
    controller = blas_controller()
    workers = workers or _block_workers.get() or blas_thread_count(controller)
    with controller.limit(limits=1, user_api="blas"):
        if workers == 1:
            yield from map(function, items)
            return
        pool = ThreadPoolExecutor(workers, thread_name_prefix="blocks")
        try:
            pending = deque()
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
