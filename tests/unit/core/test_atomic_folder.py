"""A folder replaced whole: readers see the old one or the new one, never a mix."""

import pytest

from bnn.core.atomic import atomic_folder


def test_the_new_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    (target / "stale.json").write_text("from another fit")
    with atomic_folder(target) as folder:
        (folder / "posterior.npz").write_bytes(b"new")
        assert not (target / "posterior.npz").exists()  # not visible until done
    assert sorted(p.name for p in target.iterdir()) == ["posterior.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no temporary left


def test_an_error_leaves_the_old_folder_as_it_was(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    (target / "posterior.npz").write_bytes(b"good")
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as folder:
        (folder / "posterior.npz").write_bytes(b"half")
        raise KeyboardInterrupt
    assert (target / "posterior.npz").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def test_a_missing_folder_is_created(tmp_path):
    with atomic_folder(tmp_path / "a" / "models") as folder:
        (folder / "x").write_text("1")
    assert (tmp_path / "a" / "models" / "x").read_text() == "1"
