"""Bayesian neural networks on MNIST, fitted by minibatch ADVI in PyMC.

The library behind the thin stage scripts in ``src/``, one subpackage per layer
of the pipeline; imports run one way, from the bottom up:

    core -> data, model -> predictive -> evaluation -> inference -> serving, reporting -> pipeline
"""

__version__ = "0.1.0"
