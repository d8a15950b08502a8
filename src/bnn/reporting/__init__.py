"""Figures and tables for people.

Owns: the stage plots, uncertainty plots, metric files, run comparisons, the
ensembles' comparison. Imports bnn.core, bnn.data, bnn.predictive and bnn.evaluation.
"""
