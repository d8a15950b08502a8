"""The BLAS thread pin: a fit's numbers do not depend on the machine's core count."""

import time

import numpy as np
import pytensor
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from bnn.core import threads
from bnn.inference.fitting import fit_model
from bnn.inference.settings import AdviSettings
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import DenseSpec


def tiny_fit():
    """30 fused ADVI steps of a 784-64-10 net, float32: its products are big enough to thread."""
    rng = np.random.default_rng(0)
    images, labels = rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256)
    with pytensor.config.change_flags(floatX="float32"):
        model = bnn_model(images, labels, DenseSpec(n_hidden=(64,)), FixedNormal(1.0), 64)
        return fit_model(model, AdviSettings(n_iter=30, batch_size=64), seed=3, progressbar=False)


def blas_thread_counts() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_the_pin_sets_every_blas_and_yields_to_openblas_num_threads(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with threadpool_limits(limits=1, user_api="blas"):
        limiter = threads.pin_blas_threads()
        assert blas_thread_counts() == {threads.BLAS_THREADS}
        limiter.restore_original_limits()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert threads.pin_blas_threads() is None


@pytest.mark.parametrize("machine_threads", [1, 4])
def test_a_pinned_fit_gives_the_same_bits_whatever_the_machines_thread_count(
    machine_threads, monkeypatch
):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with threadpool_limits(limits=threads.BLAS_THREADS, user_api="blas"):
        reference = tiny_fit()
    with threadpool_limits(limits=machine_threads, user_api="blas"):
        limiter = threads.pin_blas_threads()
        pinned = tiny_fit()
        limiter.restore_original_limits()
    np.testing.assert_array_equal(pinned.loss_history, reference.loss_history)
    for name, mean in reference.means.items():
        np.testing.assert_array_equal(pinned.means[name], mean)


def test_other_thread_counts_agree_to_the_stated_tolerance():
    """Unpinned, 1 and 2 threads differ in the last digits (measured: 1e-8 relative on the loss)."""
    fits = []
    for count in (1, 2):
        with threadpool_limits(limits=count, user_api="blas"):
            fits.append(tiny_fit())
    np.testing.assert_allclose(fits[0].loss_history, fits[1].loss_history, rtol=1e-6)
    for name, mean in fits[0].means.items():
        np.testing.assert_allclose(fits[1].means[name], mean, rtol=1e-5, atol=1e-6)


def test_ordered_map_keeps_the_order_and_restores_the_blas_threads():
    # Later items finish first (shorter sleeps); the results still come in input order.
    def slow_square(item):
        time.sleep(0.002 * (8 - item))
        return item, blas_thread_counts()

    with threadpool_limits(limits=2, user_api="blas"):
        results = list(threads.ordered_map(slow_square, range(8), workers=3))
        assert blas_thread_counts() == {2}
    assert [item for item, _ in results] == list(range(8))
    assert all(counts == {1} for _, counts in results)  # one BLAS thread per block


def test_ordered_map_closed_early_cancels_the_blocks_not_started():
    started = []

    def record(item):
        started.append(item)
        return item

    results = threads.ordered_map(record, range(1000), workers=2)
    assert next(results) == 0
    results.close()  # what an interrupt in the consumer does
    assert len(started) <= 2 * 2 + 2  # the blocks in flight, not the thousand


def test_ordered_map_raises_a_blocks_error_in_the_consumer():
    def fail_on_three(item):
        if item == 3:
            raise ValueError("block 3")
        return item

    with pytest.raises(ValueError, match="block 3"):
        list(threads.ordered_map(fail_on_three, range(6), workers=2))


@pytest.mark.parametrize("pinned", [1, 3])
def test_ordered_map_uses_as_many_workers_as_blas_threads_in_force(pinned):
    # A Ray job or a pinned stage allots its BLAS threads; the blocks use as many.
    import threading

    def thread_name(_item):
        time.sleep(0.01)
        return threading.current_thread().name

    with threadpool_limits(limits=pinned, user_api="blas"):
        names = set(threads.ordered_map(thread_name, range(12)))
    assert len(names) == pinned


def test_cores_for_blocks_runs_blas_on_one_thread_and_the_blocks_on_the_pinned_count():
    # A conv step: OpenBLAS's own threads stay parked, the blocks use the cores.
    import threading

    def thread_name(_item):
        time.sleep(0.01)
        return threading.current_thread().name, blas_thread_counts()

    with threadpool_limits(limits=3, user_api="blas"):
        with threads.cores_for_blocks() as workers:
            assert workers == 3 and blas_thread_counts() == {1}
            results = list(threads.ordered_map(thread_name, range(12)))
        assert blas_thread_counts() == {3}
    assert len({name for name, _ in results}) == 3
    assert all(counts == {1} for _, counts in results)
    with threads.cores_for_blocks(workers=2):
        assert len(set(threads.ordered_map(lambda _: thread_name(0)[0], range(8)))) == 2


def test_a_conv_fit_gives_the_same_bits_whatever_the_blas_thread_count(monkeypatch):
    """A conv step runs BLAS on one thread and its blocks on any number: the same sums."""
    from bnn.model import conv_ops
    from bnn.model.specs import ConvSpec

    monkeypatch.setattr(conv_ops, "BLOCK_BYTES", 64 * 2**10)  # several blocks per batch
    monkeypatch.setattr(conv_ops, "CACHE_BLOCK_BYTES", 16 * 2**10)
    rng = np.random.default_rng(0)
    images, labels = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
    histories = []
    for machine_threads in (1, 3):
        with threadpool_limits(limits=machine_threads, user_api="blas"):
            with pytensor.config.change_flags(floatX="float32"):
                model = bnn_model(
                    images, labels, ConvSpec(n_filters=(3, 2), n_hidden=(8,)), FixedNormal(1.0), 16
                )
                settings = AdviSettings(n_iter=8, batch_size=16)
                histories.append(fit_model(model, settings, seed=3, progressbar=False).loss_history)
    assert np.isfinite(histories[0]).all()
    np.testing.assert_array_equal(histories[0], histories[1])
