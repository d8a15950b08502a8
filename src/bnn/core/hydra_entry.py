"""Hydra's ``@hydra.main`` with one user-error path: ``error: ...`` on one line, exit 2.

Hydra reports a config it cannot compose (``model=resnet``, a misspelt key
such as ``inference.n_itre=5``, an override it cannot parse) in several
lines, with its search path, and exits 1. :func:`main` wraps
``hydra.main`` so that these, like every :class:`~bnn.core.errors.UserError`
of the stage itself, are one line naming the key and the fix, and exit 2.

Hydra raises its own exceptions out of its entry point only when
``HYDRA_FULL_ERROR=1``; :func:`main` sets it for the run when the user has not
(so a bug's traceback is printed whole), and leaves Hydra's own report alone
when the user has set it.

A callback's user errors do not reach :func:`main`: Hydra turns any exception
a callback raises into a warning and goes on. Callbacks decorate their hooks
with :func:`~bnn.core.cli.user_errors_exit` instead, whose ``SystemExit`` is
not an ``Exception`` and so passes through Hydra.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import hydra
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)

from bnn.core import ray_launcher
from bnn.core.cli import EXIT_USER_ERROR, user_errors_exit

FULL_ERROR = "HYDRA_FULL_ERROR"
CONFIG_DIR = "conf"


def main(
    config_path: str,
    config_name: str,
    version_base: str = "1.3",
    on_failure: Callable[[], str | None] | None = None,
) -> Callable:
    """Decorate a stage's ``main(cfg)`` like ``hydra.main``, with one-line user errors.

    Parameters
    ----------
    config_path, config_name, version_base : str
        As for ``hydra.main``: the config folder relative to the script, the
        primary config's name, and Hydra's behaviour version. The default
        version is ``"1.3"``.
    on_failure : callable, optional
        Run after a user error or an interrupt, as
        :func:`bnn.core.cli.user_errors_exit` runs it. The default is None.

    Returns
    -------
    callable
        A decorator; the decorated function takes no arguments and reads
        ``sys.argv`` as Hydra does.
    """
    ray_launcher.register()

    def decorate(task: Callable) -> Callable:
        hydra_main = hydra.main(
            config_path=config_path, config_name=config_name, version_base=version_base
        )(user_errors_exit(task, on_failure=on_failure))

        @functools.wraps(task)
        def entry() -> None:
            if os.environ.get(FULL_ERROR):
                return hydra_main()  # the user asked for Hydra's full reports
            os.environ[FULL_ERROR] = "1"
            try:
                return hydra_main()
            except HydraException as error:
                message = composition_message(error)
                if message is None:
                    raise
                print(f"error: {message}", file=sys.stderr)
                sys.exit(EXIT_USER_ERROR)
            finally:
                os.environ.pop(FULL_ERROR, None)

        return entry

    return decorate


def composition_message(error: HydraException) -> str | None:
    """One line for a config Hydra could not compose, or None for another Hydra error.

    Examples of the lines: ``model=resnet is not an option of model (conf/model/);
    choose one of conv, dense`` and ``inference.n_itre is not a setting of
    inference; its settings are batch_size, ... (add a new one with +inference.n_itre=...)``.
    """
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if group and error.options:
            where = f"{CONFIG_DIR}/{group}/" if not group.startswith("hydra") else "Hydra's"
            return (
                f"{group}={option} is not an option of {group} ({where}); "
                f"choose one of {', '.join(error.options)}"
            )
        return f"config {error.missing_cfg_file!r} not found; check the name under {CONFIG_DIR}/"
    if isinstance(error, OverrideParseException):
        return (
            f"cannot parse the override {error.override!r} ({_one_line(error.message)}); "
            "write it as key=value, quoting lists and strings for the shell"
        )
    if isinstance(error, ConfigCompositionException):
        cause = error.__cause__
        full_key = getattr(cause, "full_key", None)
        parent = getattr(cause, "parent_node", None)
        if full_key and "not in struct" in str(cause):
            group = str(full_key).rpartition(".")[0]
            known = ", ".join(str(k) for k in parent) if hasattr(parent, "keys") else ""
            settings = f"; its settings are {known}" if known else ""
            return (
                f"{full_key} is not a setting of {group or 'the config'}{settings} "
                f"(check the spelling, or add a new key with +{full_key}=...)"
            )
        return _one_line(f"{error}" + (f" ({cause})" if cause else ""))
    return None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())
