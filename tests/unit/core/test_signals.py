"""SIGINT/SIGTERM: one exception, deferred inside a step loop, one line and 128 + n at the CLI."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bnn.core.signals import Interrupted, deferred_interrupts, interrupts_raise


def test_a_signal_raises_interrupted_with_the_shell_exit_code():
    with pytest.raises(Interrupted) as stopped, interrupts_raise():
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.exit_code == 143 and "SIGTERM" in str(stopped.value)


def test_a_deferred_signal_is_only_recorded_until_polled():
    with pytest.raises(Interrupted), deferred_interrupts() as pending:
        assert pending() is None
        os.kill(os.getpid(), signal.SIGINT)
        assert pending() == signal.SIGINT  # still running: the caller decides where to stop


def test_a_signal_after_the_last_poll_is_not_lost():
    with pytest.raises(Interrupted) as stopped, deferred_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.signum == signal.SIGTERM


def test_handlers_are_put_back_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    with interrupts_raise():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


SCRIPT = textwrap.dedent(
    """
    import os, signal
    from bnn.core.cli import user_errors_exit

    @user_errors_exit(on_failure=lambda: "cleaned up")
    def main():
        os.kill(os.getpid(), signal.SIG{name})

    main()
    """
)


@pytest.mark.parametrize(("name", "code"), [("INT", 130), ("TERM", 143)])
def test_the_cli_prints_one_line_and_exits_128_plus_the_signal(name, code):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(name=name)], capture_output=True, text=True
    )
    assert result.returncode == code
    assert result.stderr.splitlines() == [f"interrupted: SIG{name}", "note: cleaned up"]
