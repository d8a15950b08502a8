"""Wall time to a validation accuracy on MNIST: our fit against NumPyro's SVI.

    python -m benchmarks.time_to_accuracy dense --target 0.98
    python -m benchmarks.time_to_accuracy conv inference.n_iter=4000 --target 0.99

(``make bench-accuracy`` runs both.) Both fitters get the same problem: the
preprocessed MNIST splits (``dvc repro preprocess``, or ``--data``), the
project's config for the network with the given Hydra overrides (schedule,
batch, start sigma), the config's seed for the initial means
(:func:`bnn.inference.pymc_engine.initial_means`), float32. Each runs in its
own process, one after the other, with a
:class:`~bnn.inference.validation.ValidationMonitor` every ``validate_every``
steps at the posterior mean (the same NumPy forward pass for both; its own
time off the clock). The clock starts before the model is built, so
compilation (PyTensor's, XLA's) counts, as it does for a user. A fit stops at
the first check that reaches the target, or after ``n_iter`` steps.

Prints one line per fitter and a JSON summary (the last line; ``--out`` writes
it too). NumPyro and JAX are the benchmark group (``make bench-env``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytensor

from benchmarks.bench import network_config
from bnn.core.atomic import write_text
from bnn.core.errors import DataError
from bnn.data.dataset import load_split, split_size
from bnn.inference.fitting import fit_model
from bnn.inference.pymc_engine import initial_means
from bnn.inference.validation import ValidationMonitor, seconds_to_reach
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.pipeline import config

PROCESSED = Path(__file__).resolve().parents[1] / "data" / "processed"
FITTERS = ("ours", "numpyro")


class TargetReached(Exception):
    """Raised by :class:`StopAtTarget` to end a fit at its first check on target."""


class StopAtTarget:
    """A fit callback: the validation monitor, then a stop once it reads ``target``."""

    def __init__(self, monitor: ValidationMonitor, target: float) -> None:
        self.monitor, self.target = monitor, target

    def __call__(self, factors, losses, step: int) -> None:
        self.monitor(factors, losses, step)
        if step % self.monitor.every == 0 and self.monitor.curve(0.0)[-1][2] >= self.target:
            raise TargetReached


def run_fitter(
    fitter: str, network: str, overrides: list[str], target: float, data: Path = PROCESSED
) -> dict:
    """One fit of ``network`` by ``fitter``, to ``target`` or ``n_iter``; its validation curve.

    ``data`` holds the ``train`` and ``valid`` splits (:func:`bnn.data.dataset.save_split`).
    """
    cfg = network_config(network, overrides)
    spec, prior = config.model_spec(cfg.model), config.prior_family(cfg.prior)
    if not isinstance(prior, FixedNormal):
        raise SystemExit(f"the NumPyro peer fits the fixed prior only, got {cfg.prior.family}")
    settings = config.advi_settings(cfg.inference)
    train, valid = load_split(data, "train"), load_split(data, "valid")
    monitor = ValidationMonitor(valid, spec, settings.validate_every)
    stop = StopAtTarget(monitor, target)
    began = time.perf_counter()
    try:
        with pytensor.config.change_flags(floatX=settings.float_dtype):
            model = bnn_model(train.images, train.labels, spec, prior, settings.batch_size)
            if fitter == "ours":
                fit_model(model, settings, cfg.seed, progressbar=False, callbacks=[stop])
            else:
                start = initial_means(
                    model, settings.init_means, settings.init_scale, np.random.default_rng(cfg.seed)
                )
                _fit_numpyro(train, spec, prior.sigma, settings, start, cfg.seed, stop)
    except TargetReached:
        pass
    curve = monitor.curve(began)
    return {
        "fitter": fitter,
        "steps": curve[-1][0] if curve else 0,
        "seconds_to_target": seconds_to_reach(curve, target),
        "curve": [(step, round(seconds, 1), score) for step, seconds, score in curve],
    }


def _fit_numpyro(train, spec, sigma, settings, start, seed, callback) -> None:
    from benchmarks import numpyro_peer  # JAX is the benchmark's own dependency group

    images = train.images.reshape(len(train.images), -1)  # the peer takes flat images
    fit = numpyro_peer.PeerFit(images, train.labels, spec, sigma, settings, start, seed)
    for step in range(1, settings.n_iter + 1):
        fit.step()
        callback(fit, None, step)  # PeerFit.means() is what the monitor reads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", choices=("dense", "conv"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. inference.n_iter=4000")
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--fitters", nargs="+", choices=FITTERS, default=list(FITTERS))
    parser.add_argument("--data", type=Path, default=PROCESSED, help="the train and valid splits")
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    parser.add_argument("--worker", choices=FITTERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        for split in ("train", "valid"):
            split_size(args.data, split)  # a missing split: one clear error, before any fit
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    fitters = [args.worker] if args.worker else args.fitters  # a worker runs one fitter
    if "numpyro" in fitters and importlib.util.find_spec("numpyro") is None:
        raise SystemExit(
            "error: NumPyro is not installed; `make bench-env` adds the benchmark group"
        )
    if args.worker:
        result = run_fitter(args.worker, args.network, args.overrides, args.target, args.data)
        print(json.dumps(result))
        return
    results = {}
    for fitter in args.fitters:
        command = [sys.executable, "-m", "benchmarks.time_to_accuracy", args.network]
        command += [*args.overrides, "--target", str(args.target), "--data", str(args.data)]
        command += ["--worker", fitter]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{fitter} failed:\n{done.stderr[-3000:]}")
        results[fitter] = json.loads(done.stdout.strip().splitlines()[-1])
        reached = results[fitter]["seconds_to_target"]
        where = f"{reached:.0f} s" if reached is not None else "not reached"
        print(
            f"{args.network} {fitter}: {args.target:.0%} validation accuracy at {where} "
            f"({results[fitter]['steps']:,} steps)",
            flush=True,
        )
    summary = json.dumps({"network": args.network, "target": args.target, **results})
    if args.out is not None:
        write_text(args.out, summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
