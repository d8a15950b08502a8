"""Fitting the posterior.

Owns: settings, the engines (pymc, fused, lrt; map on pymc and fused), their kernels,
the step loop, callbacks. Imports bnn.core, data, model, predictive and evaluation.
"""
