"""What a network is.

Owns: specs (plain values), priors, layers, PyTensor graphs, the PyMC model.
Imports bnn.core; specs and weights import neither PyMC nor PyTensor.
"""
