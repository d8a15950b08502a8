"""Bayesian neural networks on MNIST, fitted by minibatch ADVI in PyMC.

The package is the library behind the thin stage scripts in ``src/``: each
module holds one concept (IDX files, fetching, layers, priors, models,
inference, the posterior predictive, metrics, plots, tracking).
"""

__version__ = "0.1.0"
