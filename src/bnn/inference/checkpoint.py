"""Checkpoints of a running fit, so that a stopped fit resumes where it was.

A checkpoint holds everything the next step depends on: the variational
parameters, the optimizer's state, every random generator's state, the step,
the loss history so far and the fit callbacks' state (the validation curve).
Restoring it and running the remaining steps gives the same posterior, bit for
bit, as a fit that was never stopped: the same arrays go through the same code.

A checkpoint belongs to one fit. Its file is named by :func:`fit_key`, a hash
of the settings that decide the fit and of the training data, and its contents
are checked against the fit that loads it (names, shapes and dtypes of every
array), so it is never applied to another fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnn.core.atomic import atomic_path

SCHEMA_VERSION = 1
SUFFIX = ".ckpt.npz"


@dataclass(frozen=True)
class CheckpointSettings:
    """Where and how often a fit saves its state; see ``conf/config.yaml`` (``checkpoint``).

    A checkpoint is written after every ``every_steps`` steps or ``every_seconds``
    seconds, whichever comes first, so that at most that much work is lost;
    ``resume=False`` ignores (and replaces) an existing checkpoint.
    ``folder=None`` turns checkpoints off.
    """

    folder: Path | None = None
    every_steps: int = 500
    every_seconds: float = 60.0
    resume: bool = True


def fit_key(settings: Mapping, arrays: Sequence[np.ndarray]) -> str:
    """A hash of everything that decides a fit: its settings and its data.

    ``settings`` is a JSON-able mapping (the network, prior, inference settings,
    seed, code version); ``arrays`` are the training and validation arrays.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclass
class FitState:
    """The named pieces of an engine's state that a checkpoint saves and restores.

    Engines register arrays they update in place, NumPy generators, and the
    shared variables a compiled PyTensor step updates (parameters, optimizer
    moments, random generators).
    """

    _arrays: dict[str, np.ndarray] = field(default_factory=dict)
    _generators: dict[str, np.random.Generator] = field(default_factory=dict)
    _shared: dict = field(default_factory=dict)
    _synced: dict[str, tuple[Callable, Callable]] = field(default_factory=dict)

    def add_array(self, name: str, array: np.ndarray) -> None:
        """An array the engine updates in place (restored in place)."""
        self._arrays[name] = array

    def add_generator(self, name: str, generator: np.random.Generator) -> None:
        """A NumPy generator the engine draws from (its state is restored in place)."""
        self._generators[name] = generator

    def add_updated_shared(self, prefix: str, function) -> None:
        """Every shared variable that the compiled PyTensor ``function`` updates."""
        updated = [entry.variable for entry in function.maker.inputs if entry.update is not None]
        for index, variable in enumerate(updated):
            self._shared[f"{prefix}{index}.{variable.name or variable.type}"] = variable

    def add_synced(
        self, name: str, read: Callable[[], np.ndarray], write: Callable[[np.ndarray], None]
    ) -> None:
        """An array held elsewhere (a JAX device): ``read()`` copies it, ``write`` replaces it."""
        self._synced[name] = (read, write)

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Copies of the arrays, and the generators' states, keyed by name."""
        arrays = {name: array.copy() for name, array in self._arrays.items()}
        arrays.update({name: np.array(read()) for name, (read, _) in self._synced.items()})
        generators = {name: g.bit_generator.state for name, g in self._generators.items()}
        for name, variable in self._shared.items():
            value = variable.get_value(borrow=False)
            if isinstance(value, np.random.Generator):
                generators[name] = value.bit_generator.state
            else:
                arrays[name] = np.asarray(value)
        return arrays, generators

    def mismatch(self, arrays: Mapping[str, np.ndarray], generators: Mapping) -> str | None:
        """Why saved ``arrays`` and ``generators`` cannot be this state's, or ``None``."""
        current_arrays, current_generators = self.snapshot()
        if set(arrays) != set(current_arrays) or set(generators) != set(current_generators):
            return "it holds other variables"
        for name, array in current_arrays.items():
            if arrays[name].shape != array.shape or arrays[name].dtype != array.dtype:
                return f"{name} has shape {arrays[name].shape}, here {array.shape}"
        return None

    def load(self, arrays: Mapping[str, np.ndarray], generators: Mapping[str, dict]) -> None:
        """Put saved values back (check :meth:`mismatch` first)."""
        for name, array in self._arrays.items():
            array[...] = arrays[name]
        for name, (_, write) in self._synced.items():
            write(np.array(arrays[name]))
        for name, generator in self._generators.items():
            generator.bit_generator.state = generators[name]
        for name, variable in self._shared.items():
            if name in generators:
                generator = variable.get_value(borrow=True)
                generator.bit_generator.state = generators[name]
                variable.set_value(generator, borrow=True)
            else:
                variable.set_value(np.array(arrays[name]), borrow=True)


class Checkpoint:
    """The checkpoint file of one fit, and when to write it.

    Parameters
    ----------
    settings : CheckpointSettings
        Folder, frequency and whether to resume.
    key : str
        :func:`fit_key` of the fit; names the file.
    """

    def __init__(self, settings: CheckpointSettings, key: str) -> None:
        self.settings = settings
        self.key = key
        self.path = Path(settings.folder) / f"{key}{SUFFIX}"
        self.extra: dict = {}  # saved with the state, e.g. the MLflow run id
        self.elapsed_before = 0.0  # fit seconds of the runs before a resume
        self.resumed_step = 0
        self._last_save_step = 0
        self._last_save_clock = time.perf_counter()

    @property
    def shown_path(self) -> Path:
        """The file's path as a user would type it: relative to the working folder if inside it."""
        cwd = Path.cwd()
        return self.path.relative_to(cwd) if self.path.is_relative_to(cwd) else self.path

    # -- reading ------------------------------------------------------------

    def saved_meta(self) -> dict | None:
        """The saved checkpoint's metadata (step, run id, ...), or ``None`` if there is none."""
        if not self.settings.resume or not self.path.exists():
            return None
        try:
            with open(self.path, "rb") as handle, np.load(handle) as saved:
                meta = json.loads(str(saved["meta"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            self._warn(f"checkpoint {self.path} is unreadable ({error}); starting afresh")
            return None
        if meta.get("schema_version") != SCHEMA_VERSION or meta.get("key") != self.key:
            self._warn(f"checkpoint {self.path} is from another fit or version; starting afresh")
            return None
        return meta

    def restore(self, state: FitState, losses: np.ndarray, callbacks, began: float) -> int:
        """Load the saved state into ``state``, ``losses`` and ``callbacks``; return its step.

        Returns 0, and changes nothing, when there is no usable checkpoint.
        ``began`` is the current run's start (``time.perf_counter()``); the saved
        fit seconds are added to it.
        """
        meta = self.saved_meta()
        if meta is None:
            return 0
        with open(self.path, "rb") as handle, np.load(handle) as saved:
            arrays = {
                name.removeprefix("state/"): saved[name]
                for name in saved.files
                if name.startswith("state/")
            }
            saved_losses = saved["losses"]
        problem = state.mismatch(arrays, meta["generators"])
        step = int(meta["step"])
        if problem is None and (step > len(losses) or len(saved_losses) != step):
            problem = f"it is at step {step} of a fit of {len(losses)} steps"
        if problem is not None:
            self._warn(f"checkpoint {self.path} does not fit this run ({problem}); starting afresh")
            return 0
        state.load(arrays, meta["generators"])
        losses[:step] = saved_losses
        self.elapsed_before = float(meta["elapsed_seconds"])
        fit_began = began - self.elapsed_before
        for index, callback in enumerate(callbacks):
            if hasattr(callback, "restore_checkpoint"):
                callback.restore_checkpoint(meta["callbacks"][str(index)], fit_began)
        self.extra = dict(meta.get("extra", {}))
        self.resumed_step = self._last_save_step = step
        print(
            f"fit: resuming from step {step:,} of {len(losses):,} ({self.shown_path})",
            file=sys.stderr,
        )
        return step

    # -- writing ------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether ``every_steps`` steps or ``every_seconds`` seconds passed since the last save."""
        return (
            step - self._last_save_step >= self.settings.every_steps
            or time.perf_counter() - self._last_save_clock >= self.settings.every_seconds
        )

    def save(self, state: FitState, losses: np.ndarray, step: int, callbacks, began: float) -> None:
        """Write the state after ``step`` steps, atomically and durably (fsync before rename)."""
        arrays, generators = state.snapshot()
        elapsed = self.elapsed_before + time.perf_counter() - began
        fit_began = began - self.elapsed_before
        meta = {
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "step": step,
            "n_iter": len(losses),
            "elapsed_seconds": elapsed,
            "generators": generators,
            "callbacks": {
                str(index): callback.checkpoint_state(fit_began)
                for index, callback in enumerate(callbacks)
                if hasattr(callback, "checkpoint_state")
            },
            "extra": self.extra,
            "saved_at": time.time(),
        }
        payload = {f"state/{name}": array for name, array in arrays.items()}
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(meta)), losses=losses[:step], **payload)
                handle.flush()
                os.fsync(handle.fileno())
        self._last_save_step, self._last_save_clock = step, time.perf_counter()

    def remove(self) -> None:
        """Delete the checkpoint: the fit it belongs to is finished."""
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)
