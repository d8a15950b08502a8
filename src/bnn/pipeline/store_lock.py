"""Opening a local SQLite MLflow store: from several processes at once, and in a copied checkout.

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

A store's artifacts live in ``mlruns/`` beside its database file, and MLflow
records that folder's absolute path in every experiment and run. A checkout
copied with its ``mlflow.db`` and ``mlruns/`` would go on writing artifacts into
the original's folder; :func:`relocate_artifacts` moves the recorded paths to
the copy's own ``mlruns/`` when the store is first opened there.
"""

from __future__ import annotations

import contextlib
import sqlite3
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


def artifact_root(database: Path) -> Path:
    """Where a local store's artifacts go: ``mlruns/`` beside its database file."""
    return database.resolve().parent / "mlruns"


# Every column in which MLflow records an artifact location.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def relocate_artifacts(database: Path) -> list[str]:
    """Point locations under another folder's ``mlruns/`` at this store's; return the old roots.

    Only locations that end in, or run through, a ``mlruns`` folder other than
    :func:`artifact_root` change (the ones a copied checkout inherited); others,
    such as an ``s3://`` experiment, stay as they are.
    """
    if not database.is_file():
        return []
    here = artifact_root(database)
    with contextlib.closing(sqlite3.connect(database, timeout=20)) as store, store:
        tables = {row[0] for row in store.execute("select name from sqlite_master")}
        if "experiments" not in tables:
            return []
        locations = [
            row[0] or "" for row in store.execute("select artifact_location from experiments")
        ]
        old_roots = sorted(
            {root for root in map(_mlruns_root, locations) if root} - {str(here), here.as_uri()}
        )
        for old in old_roots:
            new = here.as_uri() if old.startswith("file:") else str(here)
            for table, column in LOCATION_COLUMNS:
                if table in tables:
                    store.execute(
                        f"update {table} set {column} = ? || substr({column}, ?) "
                        f"where {column} = ? or {column} like ? escape '\\'",
                        (new, len(old) + 1, old, _like_prefix(old + "/")),
                    )
    return old_roots


def _mlruns_root(location: str) -> str | None:
    """``file:///a/mlruns/0`` -> ``file:///a/mlruns``; ``None`` without a ``mlruns`` folder."""
    if not location.startswith(("file:", "/")):
        return None
    head, found, _ = location.partition("/mlruns")
    rest = location[len(head) + len(found) :]
    return head + found if found and (not rest or rest.startswith("/")) else None


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


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
        for old in relocate_artifacts(path):
            print(
                f"mlflow: {path} was copied from another checkout; its artifacts are now "
                f"{artifact_root(path)}, not {old}"
            )
        return MlflowClient(uri)
