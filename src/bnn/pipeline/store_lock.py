"""Opening one local SQLite MLflow store from several processes at once.

The first process to open a missing or empty database file makes MLflow's
tables, by running its Alembic migrations. Processes that open the same fresh
file at that moment run them too, collide ("duplicate column name: step",
"Online migration expected to match one row ... 0 found"), and their fits fail:
three of four parallel processes failed this way, measured on a new store.
A file lock beside the database lets one process make the tables while the
others wait for it.

Once the tables exist, writers need no lock of ours: MLflow sets SQLite's
``busy_timeout`` to 20 s on every session, so a writer waits its turn rather
than failing with "database is locked" (16 processes logging at once here lost
nothing). Writers on other machines, or many more of them, need
``mlflow server`` (docs/reference.md, "Parallel runs").
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

# Longer than any schema migration takes: a process stuck past it is a bug to see.
LOCK_TIMEOUT_SECONDS = 300


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI; ``None`` for any other store or an in-memory one."""
    if not uri.startswith("sqlite:"):
        return None
    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


def client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri`` whose store has its tables.

    For a SQLite file it holds ``<file>.lock`` while MLflow opens the store (and
    makes the tables if they are missing). MLflow keeps the opened store for the
    rest of the process, so only a process's first call waits for the lock.
    """
    path = sqlite_file(uri)
    if path is None:
        return MlflowClient(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_SECONDS):
        return MlflowClient(uri)
