"""What a network is.

Owns: specs (plain values), priors, layers, PyTensor graphs, the PyMC model, and
the convolution kernels (im2col, the fused ops, a direct convolution in C).
Imports bnn.core; specs and weights import neither PyMC nor PyTensor.
"""
