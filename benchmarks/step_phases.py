"""Where one ADVI step's time goes, and what each lever of the fused engine buys.

For one network (the default conf/ settings, float32, batch 500, random images of
MNIST's shape) it prints, in milliseconds per step:

1. the phases of the fused step (bnn.inference.fused): noise, weights, log density
   and gradient, loss and Adam update;
2. the log-density-and-gradient call under each compilation choice, from
   PyTensor's default to ours: the default mode (Numba) on the model's graph;
   the C backend; the C backend with the NumPy kernels (tanh, and for the conv
   net its convolutions and max-pools); and ours (also no Gemm fusion, no
   garbage collection between calls).

    python -m benchmarks.step_phases dense [--steps 40]
    python -m benchmarks.step_phases conv --steps 10

Each figure is the mean over ``--steps`` calls after warm-up, in one process;
run it alone on the machine.
"""

import argparse
import contextlib
import time
from dataclasses import replace

import numpy as np
import pymc as pm
import pytensor
from pytensor.compile.mode import Mode, get_default_mode

from benchmarks import bench
from bnn.core.threads import cores_for_blocks
from bnn.inference.fused import FusedStep
from bnn.inference.kernels import draw_weights, standard_normal
from bnn.inference.logp_gradient import FAST_CPU_MODE, compile_logp_gradient, runs_in_blocks
from bnn.inference.pymc_engine import initial_means
from bnn.model.pymc_model import bnn_model
from bnn.pipeline import config

C_MODE = Mode(linker="cvm", optimizer="fast_run")
LEVERS = {
    "PyTensor default mode (Numba), model graph": (False, None),
    "C backend, model graph": (False, C_MODE),
    "C backend + NumPy kernels": (True, C_MODE),
    "+ no Gemm, no GC between calls (ours)": (True, FAST_CPU_MODE),
}


def mean_ms(function, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    began = time.perf_counter()
    for _ in range(steps):
        function()
    return 1e3 * (time.perf_counter() - began) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("network", choices=["dense", "conv"])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    cfg = bench.network_config(args.network, [])
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    settings = replace(config.advi_settings(cfg.inference), float_dtype="float32")
    images, labels = bench.synthetic_data(50_000, seed=0)
    with contextlib.ExitStack() as stack, pytensor.config.change_flags(floatX="float32"):
        model = bnn_model(images, labels, spec, prior, settings.batch_size)
        start = initial_means(model, "glorot", 1.0, np.random.default_rng(0))
        with model:
            approx = pm.MeanField(
                start=start,
                start_sigma={
                    name: np.full(v.size, settings.start_sigma) for name, v in start.items()
                },
            )
        group = approx.groups[0]
        mu = group.params_dict["mu"].get_value(borrow=True)
        rho = group.params_dict["rho"].get_value(borrow=True)
        step = FusedStep(mu, rho, np.random.default_rng(1))
        ours = compile_logp_gradient(model, group.ordering, "float32", seed=2)
        scale = np.float32(settings.batch_size / len(images))
        # As fit_fused runs it: a conv net's step on every core, BLAS one thread each.
        if runs_in_blocks(ours):
            stack.enter_context(cores_for_blocks())
        total = mean_ms(lambda: step(0, ours, scale, 1e-6, True), args.steps)
        phases = {
            "noise (Box-Muller)": lambda: standard_normal(step.rng, step.noise, step.scratch),
            "weights": lambda: draw_weights(
                mu, rho, step.noise, step.weights, step.sigma, step.slope
            ),
            "log density and gradient": lambda: ours(step.weights),
        }
        print(f"{args.network}: {group.ddim:,} variational parameter pairs, float32")
        print(f"whole fused step: {total:.1f} ms ({1e3 / total:.1f} it/s)")
        timed = {name: mean_ms(function, args.steps) for name, function in phases.items()}
        for name, ms in timed.items():
            print(f"  {name}: {ms:.1f} ms")
        print(f"  loss and Adam update (the rest): {total - sum(timed.values()):.1f} ms")
        print("log density and gradient, by compilation choice:")
        for name, (numpy_kernels, mode) in LEVERS.items():
            function = compile_logp_gradient(
                model,
                group.ordering,
                "float32",
                seed=2,
                numpy_kernels=numpy_kernels,
                mode=mode or get_default_mode(),
            )
            print(f"  {name}: {mean_ms(lambda f=function: f(step.weights), args.steps):.1f} ms")


if __name__ == "__main__":
    main()
