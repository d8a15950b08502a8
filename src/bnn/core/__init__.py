"""Errors a user can fix, atomic writes, JSON/TSV tables, the CLI's one-line exit.

Owns: errors, atomic, tables, cli. Imports no other bnn subpackage; all may import it.
"""
