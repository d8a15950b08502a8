"""``make bench``: fit and posterior-predictive speed, ours against PyMC's defaults.

For each network (the project's default ``conf/`` settings) it measures, in
one run on this machine:

- ADVI iterations per second after warm-up: ours (the default config, whose
  ``inference.engine=fused`` step is :mod:`bnn.inference.fused`); ``pm.fit(method="advi")``
  with PyMC's defaults (float64, default mode, initial point, optimizer); our
  settings with PyMC's own step (``inference.engine=pymc``); ours with the
  local reparameterization estimator (``inference=lrt``); our settings with the
  whole step in JAX (``inference.engine=jax``, on whatever device JAX finds: the
  GPU row where there is one); and NumPyro's SVI on the same problem
  (:mod:`benchmarks.numpyro_peer`);
- the roofline: this machine's GEMM peak over the FLOPs of one step;
- the time to draw the posterior predictive of ``draws`` x ``n_test`` images,
  ours and ``pm.sample_posterior_predictive`` on the same approximation;
- the peak RSS of our fit and of our posterior chunked.

Every measurement runs in a fresh Python process, so each peak RSS is its
own and no compiled function or cache warms another. The images are random
arrays of MNIST's shape: speed does not depend on pixel values, and the bench
then needs no pipeline outputs.
``python -m benchmarks.bench [--tiny] [--out FOLDER]``; ``--tiny`` is the test mode.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pymc as pm
import pytensor
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks import roofline
from bnn.core import tables
from bnn.core.atomic import write_text
from bnn.inference.fitting import fit_model
from bnn.inference.local_reparam import fit_local_reparam
from bnn.inference.pymc_engine import initial_means
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.pipeline import config
from bnn.predictive import chunked, posterior, pymc_reference

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
KEYS = (
    "it_per_s",
    "baseline_it_per_s",
    "roofline_it_per_s",
    "dtype",
    "numpyro_it_per_s",
    "jax_it_per_s",
    "ppc_seconds",
    "baseline_ppc_seconds",
    "fit_peak_rss_mb",
    "ppc_peak_rss_mb",
)


@dataclass(frozen=True)
class Budget:
    """How much each measurement does. :data:`FULL` is ``make bench``, :data:`TINY` the tests'."""

    n_train: int
    n_test: int
    draws: int
    warmup: dict
    iters: dict
    baseline_iters: dict
    overrides: dict  # Hydra overrides per network, on top of model=<network>


FULL = Budget(
    n_train=50_000,
    n_test=10_000,
    draws=100,
    warmup={"dense": 20, "conv": 5},
    iters={"dense": 200, "conv": 40},
    baseline_iters={"dense": 60, "conv": 15},
    overrides={"dense": [], "conv": []},
)
TINY = Budget(
    n_train=600,
    n_test=50,
    draws=4,
    warmup={"dense": 2, "conv": 2},
    iters={"dense": 4, "conv": 4},
    baseline_iters={"dense": 3, "conv": 3},
    overrides={
        "dense": ["model.n_hidden=[8]", "inference.batch_size=50"],
        "conv": ["model.n_filters=[2,2]", "model.n_hidden=[8]", "inference.batch_size=50"],
    },
)


def network_config(network: str, overrides: list[str]):
    """The composed project config for ``model=<network>``, as ``src/fit.py`` would see it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={network}", *overrides])


def synthetic_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random images in [0, 1) of MNIST's shape and random labels."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def peak_rss_mb() -> float:
    """Peak resident memory of the current process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """A PyMC fit callback that timestamps every step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, _approx, _losses, _step) -> None:
        self.times.append(time.perf_counter())

    def rate_after(self, warmup: int) -> float:
        """Steps per second after the first ``warmup`` steps (compilation, caches)."""
        steps = len(self.times) - warmup
        return steps / (self.times[-1] - self.times[warmup - 1])


# --- measurements, each run in a worker process -------------------------------------


def measure_fit(job: dict) -> dict:
    """Our fit (saving its posterior to ``job['save_to']``), or PyMC's defaults.

    ``job['engine']``, when given, overrides ``inference.engine``.
    """
    cfg = network_config(job["network"], job["overrides"])
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    settings = config.advi_settings(cfg.inference)
    settings = replace(settings, engine=job.get("engine", settings.engine))
    images, labels = synthetic_data(job["n_train"], seed=0)
    clock, n_steps = StepClock(), job["warmup"] + job["iters"]
    if job.get("method") == "lrt":
        dtype = settings.float_dtype
        settings = replace(settings, method="lrt", n_iter=n_steps)
        fit_local_reparam(images, labels, spec, prior, settings, seed=1, callbacks=[clock])
    elif job["baseline"]:
        dtype = pytensor.config.floatX  # PyMC's default: PyTensor's default floatX
        model = bnn_model(images, labels, spec, prior, settings.batch_size)
        with model:
            pm.fit(n_steps, method="advi", callbacks=[clock], progressbar=False, random_seed=1)
    else:
        dtype = settings.float_dtype
        with pytensor.config.change_flags(floatX=dtype):
            model = bnn_model(images, labels, spec, prior, settings.batch_size)
            result = fit_model(
                model,
                replace(settings, n_iter=n_steps),
                seed=1,
                progressbar=False,
                callbacks=[clock],
            )
            meta = {
                "model": spec.to_dict(),
                "prior": OmegaConf.to_container(cfg.prior),
                "float_dtype": dtype,
            }
            if "save_to" in job:
                posterior.save(posterior.Posterior(result.means, result.stds, meta), job["save_to"])
    measured = {"it_per_s": clock.rate_after(job["warmup"]), "dtype": dtype, "rss": peak_rss_mb()}
    if settings.engine == "jax":
        import jax  # the engine imported it; JAX is the benchmark's own dependency group

        measured["device"] = jax.default_backend()
    return measured


def measure_ppc(job: dict) -> dict:
    """``draws`` x ``n_test`` posterior-predictive labels, ours or PyMC's."""
    fitted = posterior.load(job["posterior"])
    cfg = network_config(job["network"], job["overrides"])
    chunks = config.predictive_settings(cfg.predictive)
    images, _ = synthetic_data(job["n_test"], seed=2)
    began = time.perf_counter()
    if job["baseline"]:
        pymc_reference.sample_labels(fitted, images, job["draws"], seed=3)
    else:
        chunked.summarise_predictive(
            fitted,
            images,
            job["draws"],
            np.random.default_rng(3),
            chunk_draws=chunks["chunk_draws"],
            chunk_images=chunks["chunk_images"],
        )
    return {"seconds": time.perf_counter() - began, "rss": peak_rss_mb()}


def measure_numpyro(job: dict) -> dict:
    """NumPyro's SVI on our network, prior, start, step size and batch (:mod:`numpyro_peer`)."""
    from benchmarks import numpyro_peer  # JAX is the benchmark's own dependency group

    cfg = network_config(job["network"], job["overrides"])
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    if not isinstance(prior, FixedNormal):
        raise ValueError(f"the NumPyro peer fits the fixed prior only, got {cfg.prior.family}")
    settings = config.advi_settings(cfg.inference)
    images, labels = synthetic_data(job["n_train"], seed=0)
    with pytensor.config.change_flags(floatX="float32"):
        model = bnn_model(images, labels, spec, prior, settings.batch_size)
        start = initial_means(
            model, settings.init_means, settings.init_scale, np.random.default_rng(1)
        )
    measured = numpyro_peer.measure(
        images,
        labels,
        spec,
        prior.sigma,
        replace(settings, n_iter=job["warmup"] + job["iters"]),
        start,
        seed=1,
        warmup=job["warmup"],
        iters=job["iters"],
    )
    return measured | {"rss": peak_rss_mb()}


WORKERS = {"fit": measure_fit, "ppc": measure_ppc, "numpyro": measure_numpyro}


def in_worker(kind: str, **job) -> dict:
    """Run one measurement in a fresh interpreter; its result is its last stdout line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--worker", kind, json.dumps(job)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {kind} {job['network']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark ----------------------------------------------------------------------


def bench_network(network: str, budget: Budget, peaks: dict) -> dict:
    """Every measure of one network; the keys are :data:`KEYS` plus derived ratios."""
    common = {"network": network, "overrides": budget.overrides[network]}
    training = {"n_train": budget.n_train, "warmup": budget.warmup[network]}
    steps, baseline_steps = budget.iters[network], budget.baseline_iters[network]
    with tempfile.TemporaryDirectory(prefix="bnn-bench-") as saved:

        def timed_fit(iters: int, **job) -> dict:
            return in_worker("fit", **common, **training, iters=iters, **job)

        fit = timed_fit(steps, baseline=False, save_to=saved)
        baseline = timed_fit(baseline_steps, baseline=True)
        pymc_step = timed_fit(baseline_steps, baseline=False, engine="pymc")
        lrt = timed_fit(steps, baseline=False, method="lrt")
        jax_step = timed_fit(steps, baseline=False, engine="jax")
        numpyro = in_worker("numpyro", **common, **training, iters=steps)
        ppc_jobs = {"posterior": saved, "n_test": budget.n_test, "draws": budget.draws}
        ppc = in_worker("ppc", **common, **ppc_jobs, baseline=False)
        baseline_ppc = in_worker("ppc", **common, **ppc_jobs, baseline=True)
    cfg = network_config(network, budget.overrides[network])
    spec, batch = config.model_spec(cfg.model), cfg.inference.batch_size
    peak = peaks.setdefault(fit["dtype"], roofline.gemm_peak(fit["dtype"]))
    roof = roofline.roofline_it_per_s(spec, batch, peak)
    return {
        "it_per_s": fit["it_per_s"],
        "baseline_it_per_s": baseline["it_per_s"],
        "roofline_it_per_s": roof,
        "dtype": fit["dtype"],
        "ppc_seconds": ppc["seconds"],
        "baseline_ppc_seconds": baseline_ppc["seconds"],
        "fit_peak_rss_mb": fit["rss"],
        "ppc_peak_rss_mb": ppc["rss"],
        "baseline_dtype": baseline["dtype"],
        "lrt_it_per_s": lrt["it_per_s"],
        "pymc_step_it_per_s": pymc_step["it_per_s"],
        "speedup_vs_pymc_step": fit["it_per_s"] / pymc_step["it_per_s"],
        "numpyro_it_per_s": numpyro["it_per_s"],
        "numpyro_dtype": numpyro["dtype"],
        "numpyro_versions": numpyro["versions"],
        "speedup_vs_numpyro": fit["it_per_s"] / numpyro["it_per_s"],
        "jax_it_per_s": jax_step["it_per_s"],
        "jax_device": jax_step["device"],
        "speedup_vs_jax": fit["it_per_s"] / jax_step["it_per_s"],
        "speedup_vs_baseline": fit["it_per_s"] / baseline["it_per_s"],
        "fraction_of_roofline": fit["it_per_s"] / roof,
        "ppc_speedup_vs_baseline": baseline_ppc["seconds"] / ppc["seconds"],
        "gemm_peak_gflops": peak / 1e9,
        "step_gflop": roofline.advi_step_flops(spec, batch) / 1e9,
        "batch_size": batch,
        "ppc_draws": budget.draws,
        "ppc_images": budget.n_test,
    }


def markdown(results: dict) -> str:
    """The results as two GitHub tables (the fit, the posterior predictive), ratios beside."""
    lines = [
        "| network | dtype | fit it/s | PyMC default it/s | speed-up | PyMC step it/s "
        "| speed-up | NumPyro it/s | speed-up | JAX engine it/s (device) | speed-up "
        "| roofline it/s | of roofline | LRT it/s | fit RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for network, r in results.items():
        lines.append(
            f"| {network} | {r['dtype']} | {r['it_per_s']:.1f} | {r['baseline_it_per_s']:.2f} "
            f"({r['baseline_dtype']}) | {r['speedup_vs_baseline']:.1f}x "
            f"| {r['pymc_step_it_per_s']:.1f} | {r['speedup_vs_pymc_step']:.1f}x "
            f"| {r['numpyro_it_per_s']:.1f} | {r['speedup_vs_numpyro']:.2f}x "
            f"| {r['jax_it_per_s']:.1f} ({r['jax_device']}) | {r['speedup_vs_jax']:.2f}x "
            f"| {r['roofline_it_per_s']:.0f} | {100 * r['fraction_of_roofline']:.0f}% "
            f"| {r['lrt_it_per_s']:.1f} | {r['fit_peak_rss_mb']:.0f} MB |"
        )
    lines += [
        "",
        "| network | draws x images | predictive s | PyMC predictive s | speed-up "
        "| predictive RSS |",
        "|---|---|---|---|---|---|",
    ]
    for network, r in results.items():
        lines.append(
            f"| {network} | {r['ppc_draws']} x {r['ppc_images']} | {r['ppc_seconds']:.1f} "
            f"| {r['baseline_ppc_seconds']:.1f} | {r['ppc_speedup_vs_baseline']:.1f}x "
            f"| {r['ppc_peak_rss_mb']:.0f} MB |"
        )
    devices = {r["jax_device"] for r in results.values()}
    if "gpu" not in devices:
        lines += [
            "",
            f"No GPU row: JAX ran on {', '.join(sorted(devices))} here, so the JAX engine's "
            "row is a CPU measurement and the GPU was not measured.",
        ]
    return "\n".join(lines) + "\n"


def run(budget: Budget, out: Path, networks=("dense", "conv")) -> dict:
    """Measure every network, then write ``bench.json`` and ``bench.md`` into ``out``."""
    peaks: dict = {}
    results = {network: bench_network(network, budget, peaks) for network in networks}
    tables.write_json(out / "bench.json", results)
    write_text(out / "bench.md", markdown(results))
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tiny", action="store_true", help="small nets, few steps (the tests)")
    parser.add_argument("--out", type=Path, default=Path("metrics"), help="folder for bench.*")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, job = args.worker
        print(json.dumps(WORKERS[kind](json.loads(job))))
        return 0
    budget = TINY if args.tiny else FULL
    print(markdown(run(budget, args.out)), end="")
    print(json.dumps({"budget": asdict(budget)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
