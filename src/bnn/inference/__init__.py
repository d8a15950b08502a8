"""Fitting the posterior.

Owns: settings, the engines (pymc, fused, jax, lrt; map on pymc, fused and jax), their kernels,
the step loop, callbacks. Imports bnn.core, data, model, predictive and evaluation.
"""
