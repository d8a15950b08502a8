"""Which stores :mod:`bnn.pipeline.store_lock` locks (parallel writers: tests/integration)."""

from bnn.pipeline import store_lock


def test_sqlite_file_of_a_uri(tmp_path):
    assert store_lock.sqlite_file(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    relative = store_lock.sqlite_file("sqlite:///relative/a.db?timeout=30")
    assert relative.as_posix() == "relative/a.db"
    assert store_lock.sqlite_file("sqlite://") is None  # in memory
    assert store_lock.sqlite_file("http://127.0.0.1:5000") is None
