"""MNIST as files and arrays.

Owns: IDX parsing, sources and fetch, the validation split, shifted and OOD inputs,
the seeded evaluation sets.
Imports bnn.core and bnn.model.specs only; no PyMC, no PyTensor.
"""
