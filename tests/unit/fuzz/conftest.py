"""The fuzz tests' example counts, printed at the end of the run."""

from helpers_fuzz import COUNTS


def pytest_terminal_summary(terminalreporter) -> None:
    if COUNTS:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(COUNTS.items()))
        terminalreporter.write_line(f"fuzzed inputs: {sum(COUNTS.values())} ({parts})")
