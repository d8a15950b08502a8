"""Shared settings and an example counter for the property-based fuzz tests (tests/unit/fuzz).

Every fuzz test calls :func:`count` once per generated input, and the fuzz
folder's ``conftest.py`` prints the totals after the run, so that the README
can say how many inputs were tried. ``derandomize`` makes each run try the same
inputs, so a failure in CI reproduces on any machine.
"""

from __future__ import annotations

import collections

from hypothesis import HealthCheck, settings

COUNTS: collections.Counter[str] = collections.Counter()

FUZZ = settings(
    max_examples=150,
    deadline=2000,  # ms per input: a hang or unbounded work fails the test
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def count(parser: str) -> None:
    """One more input tried against ``parser``."""
    COUNTS[parser] += 1
