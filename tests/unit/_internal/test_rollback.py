"""Undoing a failed start: what it created goes, what existed stays."""

from __future__ import annotations

from pathlib import Path

from custodes._internal.rollback import Created


def test_a_new_directory_and_its_missing_parents_are_removed(tmp_path: Path) -> None:
    data = tmp_path / "a" / "b" / "data"
    created = Created([data])
    data.mkdir(parents=True)
    (data / "key.pem").write_bytes(b"k")
    (data / "sub").mkdir()
    (data / "sub" / "x").write_bytes(b"x")
    removed = created.undo()
    assert list(tmp_path.iterdir()) == []
    assert tmp_path / "a" in removed


def test_what_existed_is_kept_and_only_new_paths_go(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "old-key.pem").write_bytes(b"old")
    (data / "old-dir").mkdir()
    created = Created([data])
    (data / "new-key.pem").write_bytes(b"new")
    (data / "old-dir" / "new-file").write_bytes(b"new")
    (data / "old-key.pem").write_bytes(b"changed")  # an existing file is never removed
    created.undo()
    assert sorted(p.name for p in data.rglob("*")) == ["old-dir", "old-key.pem"]
    assert (data / "old-key.pem").read_bytes() == b"changed"


def test_watched_files_outside_the_directory(tmp_path: Path) -> None:
    (tmp_path / "existing.db").write_bytes(b"db")
    store = tmp_path / "elsewhere" / "custodes.db"
    created = Created([tmp_path / "data"], [store, tmp_path / "existing.db"])
    store.parent.mkdir()
    store.write_bytes(b"new db")
    created.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.db"]


def test_nothing_new_removes_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    assert Created([tmp_path]).undo() == []
    assert (tmp_path / "f").exists()
