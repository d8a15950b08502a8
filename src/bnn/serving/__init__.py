"""Using a fitted posterior.

Owns: image input, the predict table, the flag rule, the MLflow pyfunc model.
Imports bnn.core, data, model, predictive, evaluation; no PyMC, so predict starts fast.
"""
