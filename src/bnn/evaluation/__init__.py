"""Scores of a predictive.

Owns: accuracy, NLL, calibration, error detection, shift, OOD, hyperprior summaries.
Imports bnn.core, bnn.model and bnn.predictive; never PyMC.
"""
