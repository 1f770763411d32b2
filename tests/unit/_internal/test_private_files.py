"""Modes of the broker's state: the owner/mode rules, and the real files under umask 022."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from custodes._internal.private_files import (
    FileModeError,
    check_store_file,
    create_private_file,
    ensure_private_dir,
    key_mode_problem,
    read_private_key_file,
    store_mode_problem,
)
from custodes.errors import ConfigError

ME = 1000
ROOT = 0


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o200, 0o000])
def test_key_owned_by_us_may_be_private_only(mode: int) -> None:
    assert key_mode_problem(mode, ME, ME) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o610, 0o601])
def test_key_owned_by_us_readable_by_others_is_refused(mode: int) -> None:
    assert "group and others" in (key_mode_problem(mode, ME, ME) or "")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o440, 0o400])
def test_root_owned_key_may_be_group_readable(mode: int) -> None:
    # Kubernetes Secret files of a non-root pod: root-owned, fsGroup, defaultMode 0440.
    assert key_mode_problem(mode, ROOT, ME) is None


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o650, 0o444])
def test_root_owned_key_writable_by_group_or_readable_by_others_is_refused(mode: int) -> None:
    assert "owned by root" in (key_mode_problem(mode, ROOT, ME) or "")


def test_key_owned_by_a_stranger_is_refused() -> None:
    assert "uid 4242" in (key_mode_problem(0o600, 4242, ME) or "")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o606, 0o660, 0o700 | 0o010])
def test_store_file_for_group_or_others_is_refused(mode: int) -> None:
    assert store_mode_problem(mode) is not None


def test_private_store_file_passes() -> None:
    assert store_mode_problem(0o600) is None


# --- real files --------------------------------------------------------------------------


def test_private_dir_created_0700_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "a" / "data"
    ensure_private_dir(path)
    assert _mode(path) == 0o700


def test_existing_dir_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "volume"
    path.mkdir()
    path.chmod(0o777)  # an emptyDir: the operator's, not ours to change
    ensure_private_dir(path)
    assert _mode(path) == 0o777


def test_private_dir_over_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_private_dir(tmp_path / "f")


def test_private_file_created_0600_and_never_replaced(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "s.db"
    assert create_private_file(path) is True
    assert _mode(path) == 0o600
    path.write_bytes(b"kept")
    assert create_private_file(path) is False
    assert path.read_bytes() == b"kept"


def test_store_file_readable_by_others_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "custodes.db"
    path.write_bytes(b"")
    path.chmod(0o644)
    with pytest.raises(FileModeError, match=f"chmod 600 {path}"):
        check_store_file(path)
    path.chmod(0o600)
    check_store_file(path)
    check_store_file(tmp_path / "absent-wal")  # a missing -wal/-shm is fine


def test_readable_key_file_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"key")
    path.chmod(0o644)
    with pytest.raises(FileModeError, match=f"chmod 600 {path}"):
        read_private_key_file(path, "key")
    path.chmod(0o600)
    assert read_private_key_file(path, "key") == b"key"


def test_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test changes a file's owner: it needs root (as the suite runs)")
    path = tmp_path / "k.pem"
    path.write_bytes(b"key")
    path.chmod(0o600)
    os.chown(path, 4242, -1)
    with pytest.raises(FileModeError, match="uid 4242"):
        read_private_key_file(path, "key")


def test_key_file_through_a_symlink_is_checked_at_its_target(tmp_path: Path) -> None:
    # Kubernetes Secret files are symlinks into ..data/: the target's mode is what counts.
    target = tmp_path / "target.pem"
    target.write_bytes(b"key")
    target.chmod(0o644)
    link = tmp_path / "k.pem"
    link.symlink_to(target)
    with pytest.raises(FileModeError):
        read_private_key_file(link, "key")


def test_key_file_that_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_private_key_file(tmp_path, "key")
    with pytest.raises(ConfigError, match="cannot read"):
        read_private_key_file(tmp_path / "absent", "key")
