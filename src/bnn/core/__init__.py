"""Errors a user can fix, atomic writes, JSON/TSV tables, the CLI's one-line exit and signals.

Owns: errors, atomic, tables, cli, hydra_entry, ray_launcher (``hydra/launcher=ray``),
signals (SIGINT/SIGTERM as one exception), threads (BLAS), progress, mnist. Imports no
other bnn subpackage; all may import it.
"""
