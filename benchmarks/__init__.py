"""Benchmarks and profiles of the library (``make bench``); not part of the installed package."""
