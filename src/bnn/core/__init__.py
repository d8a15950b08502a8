"""Errors a user can fix, atomic writes, JSON/TSV tables, the CLI's one-line exit, BLAS threads.

Owns: errors, atomic, tables, cli, threads. Imports no other bnn subpackage; all may import it.
"""
