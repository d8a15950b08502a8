"""Validation accuracy against ADVI steps for several settings, one process per setting.

Used to choose the defaults in conf/ (README, "Choosing the defaults"). Every
``--every`` steps it prints the step, the seconds so far and the validation
accuracy of the network at the posterior mean; at the end, the test accuracy of
100 posterior-predictive draws.

    python -m benchmarks.accuracy_sweep settings.json [--every 1000]

``settings.json`` is a list of objects, each with a ``name``, a prior ``sigma``
and any :class:`bnn.inference.settings.AdviSettings` fields, e.g.
``[{"name": "s1", "sigma": 1.0, "n_iter": 5000}]``. Needs ``dvc repro preprocess``.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytensor

from bnn.data.dataset import load_split
from bnn.evaluation.metrics import accuracy, label_counts, mode_prediction
from bnn.inference.fitting import posterior_mean_accuracy
from bnn.inference.pymc_engine import fit_advi
from bnn.inference.settings import AdviSettings
from bnn.model.priors import FixedNormal
from bnn.model.pymc_model import bnn_model
from bnn.model.specs import DenseSpec
from bnn.predictive.chunked import sample_predictive
from bnn.predictive.posterior import Posterior


def run_one(setting: dict, every: int, processed: str) -> dict:
    setting = dict(setting)
    name, sigma = setting.pop("name"), setting.pop("sigma")
    settings = AdviSettings(**setting)
    spec = DenseSpec()
    train, valid, test = (load_split(processed, split) for split in ("train", "valid", "test"))
    curve, began = [], time.perf_counter()

    def monitor(factors, _losses, step):
        if step % every == 0:
            posterior = Posterior(factors.means(), factors.stds(), {"model": spec.to_dict()})
            curve.append(
                (
                    step,
                    round(time.perf_counter() - began, 1),
                    posterior_mean_accuracy(posterior, valid),
                )
            )
            print(name, curve[-1], flush=True)

    with pytensor.config.change_flags(floatX=settings.float_dtype):
        model = bnn_model(train.images, train.labels, spec, FixedNormal(sigma), settings.batch_size)
        result = fit_advi(model, settings, seed=1, progressbar=False, callbacks=[monitor])
        posterior = Posterior(result.means, result.stds, {"model": spec.to_dict()})
    samples = sample_predictive(posterior, test.images, 100, np.random.default_rng(0))
    return {
        "name": name,
        "it_per_s": settings.n_iter / result.seconds,
        "valid_curve": curve,
        "test_accuracy_mode": accuracy(
            mode_prediction(label_counts(samples.sampled_labels)), test.labels
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings")
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--processed", default="data/processed")
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = json.loads(open(args.settings).read())
    if args.index is not None:
        print("RESULT", json.dumps(run_one(settings[args.index], args.every, args.processed)))
        return
    # One process per setting, each with its own PyTensor compile folder (no lock waits).
    children = [
        subprocess.Popen(
            [sys.executable, __file__, *sys.argv[1:], "--index", str(index)],
            env={**os.environ, "PYTENSOR_FLAGS": f"base_compiledir=/tmp/pytensor-sweep-{index}"},
        )
        for index in range(len(settings))
    ]
    sys.exit(max(child.wait() for child in children))


if __name__ == "__main__":
    main()
