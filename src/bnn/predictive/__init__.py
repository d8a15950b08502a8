"""The fitted posterior and what it predicts.

Owns: the posterior as arrays, the batched NumPy forward pass, the chunked
predictive, ensembles of posteriors and their mixture predictive, PyMC's
reference. Imports bnn.core, bnn.data, bnn.model.
"""
