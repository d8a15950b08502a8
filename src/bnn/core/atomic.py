"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from bnn.core.errors import DiskFullError

# A full disk, a full quota, or a file larger than the process may write (RLIMIT_FSIZE):
# the user can fix each by freeing space, so each is one line, not a traceback.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same folder, so the final ``os.replace`` is
    atomic on POSIX. On any error the temporary file is removed and ``path`` is
    left as it was.

    Raises
    ------
    DiskFullError
        If writing fails because the disk, the quota or the file-size limit is
        full (``ENOSPC``, ``EDQUOT``, ``EFBIG``). The message names ``path`` and
        says that the previous file, if any, was kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise _disk_full(path, existed, error) from error
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions open() would have.
    os.chmod(tmp_path, 0o666 & ~_current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        raise _disk_full(path, existed, error) from error
    finally:
        tmp_path.unlink(missing_ok=True)


def _disk_full(path: Path, existed: bool, error: OSError) -> OSError:
    """A :class:`DiskFullError` for a full disk; any other ``OSError`` as it was."""
    if error.errno not in DISK_FULL_ERRNOS or isinstance(error, DiskFullError):
        return error
    kept = "the previous file was kept unchanged" if existed else "no file was written"
    reason = os.strerror(error.errno)
    return DiskFullError(
        error.errno,
        f"{path}: the write failed, the disk is full ({reason}); {kept}. "
        "Free some space (or raise the file-size limit) and run the command again",
    )


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` once closed without error."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on success it takes the place of ``path``.

    A reader sees the old folder or the new one whole, never a mix: files the
    new one lacks do not linger from the old. On any error the new folder is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old.{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
