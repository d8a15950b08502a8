"""The conv net's NumPy kernels, one at a time: where a conv step's time goes.

1. Each kernel of ``bnn.model.conv_ops`` and ``bnn.model.conv_pool_ops`` inside the
   fused engine's log-density-and-gradient call (the default conf/ conv net,
   float32, batch 500, random images of MNIST's shape): the median milliseconds
   of its calls after warm-up.
2. The block budgets: the image gradient of layer 2 at ``CACHE_BLOCK_BYTES``
   from 0.5 to 8 MiB; the fused first block (conv, bias, pool) and its
   gradients, and layer 2's forward and kernel gradient, at ``BLOCK_BYTES``
   from 2 to 32 MiB.

Both run as the fused engine runs a conv step: inside
``bnn.core.threads.cores_for_blocks``.

    python -m benchmarks.conv_kernels [--steps 10]

Run it alone on the machine.
"""

import argparse
import time
from dataclasses import replace

import numpy as np
import pymc as pm
import pytensor

from benchmarks import bench
from bnn.core.threads import cores_for_blocks
from bnn.inference.logp_gradient import NumpyTanh, compile_logp_gradient
from bnn.inference.pymc_engine import initial_means
from bnn.model import conv_ops, conv_pool_ops
from bnn.model.pymc_model import bnn_model
from bnn.pipeline import config

KERNELS = (
    conv_pool_ops.ConvBiasPool,
    conv_pool_ops.ConvBiasPoolGrad,
    conv_pool_ops.ConvBiasPoolImageGrad,
    conv_ops.Conv2dValid,
    conv_ops.Conv2dInputGrad,
    conv_ops.Conv2dKernelGrad,
    conv_ops.MaxPool2d,
    conv_ops.MaxPool2dGrad,
    NumpyTanh,
)


def timed_kernels(calls: dict) -> None:
    """Wrap each kernel's ``perform`` so that ``calls[(name, shape)]`` collects its times."""
    for kernel in KERNELS:

        def perform(self, node, inputs, output_storage, _original=kernel.perform):
            began = time.perf_counter()
            _original(self, node, inputs, output_storage)
            key = (type(self).__name__, inputs[0].shape)
            calls.setdefault(key, []).append(1e3 * (time.perf_counter() - began))

        kernel.perform = perform


def in_the_step(steps: int) -> None:
    cfg = bench.network_config("conv", [])
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    settings = replace(config.advi_settings(cfg.inference), float_dtype="float32")
    images, labels = bench.synthetic_data(50_000, seed=0)
    calls: dict = {}
    with pytensor.config.change_flags(floatX="float32"):
        model = bnn_model(images, labels, spec, prior, settings.batch_size)
        start = initial_means(model, "glorot", 1.0, np.random.default_rng(0))
        with model:
            group = pm.MeanField(start=start).groups[0]
        weights = group.params_dict["mu"].get_value().astype("float32")
        # before compiling: the C virtual machine binds each node's perform then
        timed_kernels(calls)
        function = compile_logp_gradient(model, group.ordering, "float32", seed=2)
        for _ in range(3):
            function(weights)
        calls.clear()
        began = time.perf_counter()
        for _ in range(steps):
            function(weights)
        total = 1e3 * (time.perf_counter() - began) / steps
    print(f"log density and gradient: {total:.1f} ms per call")
    for (name, shape), times in calls.items():
        print(f"  {np.median(times):6.2f} ms  {name} {shape}")
    covered = sum(np.median(times) for times in calls.values())
    print(f"  {total - covered:6.2f} ms  everything else (PyTensor's own ops)")


def best_of(function, repeats: int = 10) -> float:
    function()
    began = time.perf_counter()
    for _ in range(repeats):
        function()
    return 1e3 * (time.perf_counter() - began) / repeats


def block_budgets() -> None:
    rng = np.random.default_rng(0)
    layer1 = rng.random((500, 28, 28, 1), dtype="float32")
    kernel1 = rng.normal(size=(5, 5, 1, 32)).astype("float32")
    bias1 = rng.normal(size=32).astype("float32")
    pooled_gradient1 = rng.normal(size=(500, 12, 12, 32)).astype("float32")
    layer2 = rng.normal(size=(500, 12, 12, 32)).astype("float32")
    gradient2 = rng.normal(size=(500, 8, 8, 32)).astype("float32")
    kernel2 = rng.normal(size=(5, 5, 32, 32)).astype("float32")
    image_grad = np.empty((500, 12, 12, 32), "float32")
    pooled1 = conv_pool_ops.conv_bias_pool(layer1, kernel1, bias1, 2)
    defaults = conv_ops.BLOCK_BYTES, conv_ops.CACHE_BLOCK_BYTES
    try:
        print("CACHE_BLOCK_BYTES: layer-2 image gradient (ms)")
        for mib in (0.5, 1, 2, 4, 8):
            conv_ops.CACHE_BLOCK_BYTES = int(mib * 2**20)
            image = best_of(lambda: conv_ops.conv2d_image_gradient(gradient2, kernel2, image_grad))
            print(f"  {mib:4} MiB: {image:6.2f}")
        print(
            "BLOCK_BYTES: layer-1 conv + bias + pool, its gradients; "
            "layer-2 forward, its kernel gradient (ms)"
        )
        for mib in (2, 4, 8, 16, 32):
            conv_ops.BLOCK_BYTES = int(mib * 2**20)
            pool1 = best_of(lambda: conv_pool_ops.conv_bias_pool(layer1, kernel1, bias1, 2))
            grads1 = best_of(
                lambda: conv_pool_ops.conv_bias_pool_gradients(
                    layer1, 5, pooled1[1], pooled_gradient1, 2
                )
            )
            forward2 = best_of(lambda: conv_ops.conv2d_valid(layer2, kernel2))
            kernel = best_of(lambda: conv_ops.conv2d_kernel_gradient(layer2, gradient2, 5))
            print(f"  {mib:4} MiB: {pool1:6.2f} {grads1:6.2f} {forward2:6.2f} {kernel:6.2f}")
    finally:
        conv_ops.BLOCK_BYTES, conv_ops.CACHE_BLOCK_BYTES = defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    # As the fused engine runs a conv net's step: blocks on every core, BLAS one thread each.
    with cores_for_blocks():
        in_the_step(args.steps)
        block_budgets()


if __name__ == "__main__":
    main()
