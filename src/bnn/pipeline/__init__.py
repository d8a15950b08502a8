"""The pipeline: DVC stages, config, tracking, sweeps.

Owns: one module per stage, the chain a sweep job runs, Hydra config to typed
settings, MLflow tracking, sweeps, ensembles' sweeps, the variants table.
Imports every other subpackage.
"""
