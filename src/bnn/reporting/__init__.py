"""Figures and tables for people.

Owns: the stage plots, uncertainty plots, metric files, run comparisons.
Imports bnn.core and bnn.evaluation.
"""
