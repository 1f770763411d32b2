"""The atomic output writer: complete or nothing, never a silently created directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from custodes._internal.atomic import (
    PARTIAL_SUFFIX,
    OutputError,
    atomic_output,
    check_target,
    write_atomic,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_the_file_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_atomic(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_public_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "pub", b"x", private=False)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "pub") == 0o644


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"


def test_no_overwrite_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="exists"):
        write_atomic(target, b"new", overwrite=False)
    assert target.read_bytes() == b"old"
    assert not (tmp_path / ("out" + PARTIAL_SUFFIX)).exists()


def test_no_overwrite_refuses_a_file_that_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="exists"):
        with atomic_output(target, overwrite=False) as f:
            f.write(b"mine")
            target.write_bytes(b"theirs")  # another writer won the race
    assert target.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_directory_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out"
    with pytest.raises(OutputError, match=r"directory .*missing does not exist"):
        write_atomic(target, b"x")
    assert not (tmp_path / "missing").exists()


def test_parent_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match="is not a directory"):
        write_atomic(tmp_path / "file" / "out", b"x")


def test_a_directory_target_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        write_atomic(target, b"plaintext")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert list(target.iterdir()) == []


def test_a_failure_in_the_block_removes_the_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as f:
        f.write(b"half of the plaintext")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_keyboard_interrupt_removes_the_partial_file(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "out") as f:
        f.write(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_leftover_partial_file_is_replaced(tmp_path: Path) -> None:
    leftover = tmp_path / ("out" + PARTIAL_SUFFIX)
    leftover.write_bytes(b"from a killed run")
    write_atomic(tmp_path / "out", b"fresh")
    assert (tmp_path / "out").read_bytes() == b"fresh"
    assert not leftover.exists()


def test_a_symlinked_partial_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ("out" + PARTIAL_SUFFIX)).symlink_to(victim)
    write_atomic(tmp_path / "out", b"data")
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "out").read_bytes() == b"data"


def test_special_file_target_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        check_target(tmp_path / "fifo")


def test_full_device_is_one_clear_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.fail("/dev/full is needed to simulate a full disk")
    # Writing through a file on a full device: the writer's own OSError becomes OutputError.
    with pytest.raises(OutputError, match="no space left"), atomic_output(tmp_path / "out") as f:
        with open("/dev/full", "wb", buffering=0) as full:
            f.write(b"x")
            try:
                full.write(b"x")
            except OSError as e:
                raise OSError(e.errno, e.strerror) from None  # as if the output's write failed
    assert list(tmp_path.iterdir()) == []


def test_relative_target_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic(Path("rel"), b"x")
    assert (tmp_path / "rel").read_bytes() == b"x"
