"""Files and trees: layout of outputs, refusals (links, overlap, overwrite), and safety on
interruption — after a tampered chunk, a KeyboardInterrupt or a write error, nothing is left
under a final name and no partial file remains."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from custodes.datasets.errors import (
    ChunkAuthenticationFailed,
    DatasetPathError,
    KeyIdMismatch,
)
from custodes.datasets.files import (
    PARTIAL_SUFFIX,
    SUFFIX,
    dataset_files,
    decrypt_path,
    decrypt_plan,
    encrypt_path,
    encrypt_plan,
)
from custodes.datasets.format import FIXED_HEADER_BYTES, MIN_CHUNK_SIZE, TAG_BYTES
from custodes.datasets.keys import generate_key, write_key_file

KEY_ID = "kbs:///default/dataset/fraud"
C = MIN_CHUNK_SIZE
KEY = generate_key()


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.csv").write_bytes(os.urandom(3 * C + 7))
    (root / "sub" / "b.csv").write_bytes(b"small")
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    return root


def _tamper(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _header_size() -> int:
    return FIXED_HEADER_BYTES + len(KEY_ID)


# --- layout ------------------------------------------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    plain = tmp_path / "data.csv"
    plain.write_bytes(os.urandom(2 * C + 1))
    assert encrypt_path(plain, tmp_path / "data.cdx", KEY, KEY_ID, chunk_size=C) == [
        tmp_path / "data.cdx"
    ]
    assert decrypt_path(tmp_path / "data.cdx", tmp_path / "back.csv", KEY) == [
        tmp_path / "back.csv"
    ]
    assert (tmp_path / "back.csv").read_bytes() == plain.read_bytes()
    for out in ("data.cdx", "back.csv"):
        assert stat.S_IMODE((tmp_path / out).stat().st_mode) == 0o600
    assert _all_files(tmp_path) == ["back.csv", "data.cdx", "data.csv"]


def test_tree_round_trip(tree: Path, tmp_path: Path) -> None:
    sealed, back = tmp_path / "sealed", tmp_path / "back"
    written = encrypt_path(tree, sealed, KEY, KEY_ID, chunk_size=C)
    assert _all_files(sealed) == [
        "a.csv.cdx",
        "sub",
        "sub/b.csv.cdx",
        "sub/deeper",
        "sub/deeper/empty.cdx",
    ]
    assert sorted(written) == sorted(p for p in sealed.rglob("*") if p.is_file())
    assert stat.S_IMODE((sealed / "sub").stat().st_mode) == 0o700
    decrypt_path(sealed, back, KEY, expected_key_id=KEY_ID)
    assert _all_files(back) == _all_files(tree)
    for f in tree.rglob("*"):
        if f.is_file():
            assert (back / f.relative_to(tree)).read_bytes() == f.read_bytes()


def test_plans_match_what_is_written(tree: Path, tmp_path: Path) -> None:
    jobs = encrypt_plan(tree, tmp_path / "out")
    assert [j.target.name for j in jobs] == ["a.csv.cdx", "b.csv.cdx", "empty.cdx"]
    encrypt_path(tree, tmp_path / "out", KEY, KEY_ID)
    back = decrypt_plan(tmp_path / "out", tmp_path / "back")
    assert [j.target.relative_to(tmp_path / "back") for j in back] == [
        j.source.relative_to(tree) for j in jobs
    ]


def test_decrypting_a_tree_skips_files_that_are_not_datasets(tree: Path, tmp_path: Path) -> None:
    sealed = tmp_path / "sealed"
    encrypt_path(tree, sealed, KEY, KEY_ID)
    (sealed / "README").write_text("not a dataset")
    assert len(dataset_files(sealed)) == 3
    decrypt_path(sealed, tmp_path / "back", KEY)
    assert not (tmp_path / "back" / "README").exists()


def test_a_file_named_only_the_suffix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sealed").mkdir()
    (tmp_path / "sealed" / SUFFIX).write_bytes(b"")
    with pytest.raises(DatasetPathError):
        decrypt_plan(tmp_path / "sealed", tmp_path / "back")


# --- refusals ----------------------------------------------------------------------------


def test_symlink_source_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_bytes(b"x")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(DatasetPathError):
        encrypt_path(tmp_path / "link", tmp_path / "out", KEY, KEY_ID)
    assert not (tmp_path / "out").exists()


def test_symlink_inside_a_tree_refused_before_anything_is_written(
    tree: Path, tmp_path: Path
) -> None:
    (tree / "sub" / "escape").symlink_to("/etc/passwd")
    with pytest.raises(DatasetPathError):
        encrypt_path(tree, tmp_path / "out", KEY, KEY_ID)
    assert not (tmp_path / "out").exists()


def test_special_file_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DatasetPathError):
        encrypt_path(tmp_path / "fifo", tmp_path / "out", KEY, KEY_ID)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError):
        encrypt_path(tmp_path / "nope", tmp_path / "out", KEY, KEY_ID)


def test_overlapping_source_and_output_refused(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError):
        encrypt_path(tree, tree / "sealed", KEY, KEY_ID)
    with pytest.raises(DatasetPathError):
        encrypt_path(tree, tree, KEY, KEY_ID)
    with pytest.raises(DatasetPathError):
        encrypt_path(tree / "a.csv", tree / "a.csv", KEY, KEY_ID)


def test_existing_output_refused_unless_overwrite(tmp_path: Path) -> None:
    plain, out = tmp_path / "p", tmp_path / "out"
    plain.write_bytes(b"new")
    out.write_bytes(b"old")
    with pytest.raises(DatasetPathError):
        encrypt_path(plain, out, KEY, KEY_ID)
    assert out.read_bytes() == b"old"
    encrypt_path(plain, out, KEY, KEY_ID, overwrite=True)
    assert decrypt_path(out, tmp_path / "back", KEY)
    assert (tmp_path / "back").read_bytes() == b"new"


def test_a_stale_partial_file_is_replaced(tmp_path: Path) -> None:
    plain, out = tmp_path / "p", tmp_path / "out"
    plain.write_bytes(b"data")
    (tmp_path / ("out" + PARTIAL_SUFFIX)).write_bytes(b"left by a killed run")
    encrypt_path(plain, out, KEY, KEY_ID)
    assert _all_files(tmp_path) == ["out", "p"]


# --- interruption ------------------------------------------------------------------------


@pytest.fixture
def big_sealed(tmp_path: Path) -> Path:
    plain = tmp_path / "big"
    plain.write_bytes(os.urandom(8 * C + 100))
    encrypt_path(plain, tmp_path / "big.cdx", KEY, KEY_ID, chunk_size=C)
    plain.unlink()
    return tmp_path / "big.cdx"


def test_tampered_chunk_halfway_leaves_nothing(big_sealed: Path, tmp_path: Path) -> None:
    _tamper(big_sealed, _header_size() + 4 * (C + TAG_BYTES) + 10)  # chunk 4 of 9
    written: list[int] = []
    out = tmp_path / "out" / "nested" / "plain"
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt_path(big_sealed, out, KEY, progress=written.append, create_parents=True)
    assert sum(written) == 4 * C  # four chunks had been written to the partial file
    assert _all_files(tmp_path) == ["big.cdx"]  # no output, no partial, no new directories


@pytest.mark.parametrize("operation", ["encrypt", "decrypt"])
def test_keyboard_interrupt_leaves_nothing(
    big_sealed: Path, tmp_path: Path, operation: str
) -> None:
    def interrupt(n: int) -> None:
        progress.append(n)
        if len(progress) == 3:
            raise KeyboardInterrupt

    progress: list[int] = []
    source = big_sealed
    if operation == "encrypt":
        source = tmp_path / "plain"
        source.write_bytes(os.urandom(8 * C))
    before = _all_files(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        if operation == "encrypt":
            encrypt_path(source, tmp_path / "out", KEY, KEY_ID, chunk_size=C, progress=interrupt)
        else:
            decrypt_path(source, tmp_path / "out", KEY, progress=interrupt)
    assert _all_files(tmp_path) == before


def test_failure_in_a_later_file_removes_the_earlier_outputs(tree: Path, tmp_path: Path) -> None:
    sealed, back = tmp_path / "sealed", tmp_path / "back"
    encrypt_path(tree, sealed, KEY, KEY_ID, chunk_size=C)
    # Files are processed in sorted order: a.csv.cdx first, then sub/…; spoil the last one.
    _tamper(sealed / "sub" / "deeper" / "empty.cdx", _header_size())
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt_path(sealed, back, KEY)
    assert not back.exists()


def test_wrong_key_id_in_a_tree_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    sealed, back = tmp_path / "sealed", tmp_path / "back"
    encrypt_path(tree, sealed, KEY, KEY_ID)
    other = tmp_path / "other.csv"
    other.write_bytes(b"x")
    encrypt_path(other, sealed / "zz.cdx", KEY, "kbs:///default/dataset/other")
    with pytest.raises(KeyIdMismatch):
        decrypt_path(sealed, back, KEY, expected_key_id=KEY_ID)
    assert not back.exists()


def test_existing_empty_output_directory_is_kept_on_failure(
    big_sealed: Path, tmp_path: Path
) -> None:
    """As a memory-backed mount point would be: the call did not create it, so it stays."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    _tamper(big_sealed, _header_size() + 3)
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt_path(big_sealed, mount / "data", KEY)
    assert mount.is_dir() and not any(mount.iterdir())


def test_write_error_leaves_nothing(big_sealed: Path, tmp_path: Path) -> None:
    """A real write failure: the file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the
    kernel refuse the write with EFBIG partway, in a child process running the CLI."""
    key_file = tmp_path / "k"
    write_key_file(key_file, KEY)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3 * C, 3 * C))

    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custodes",
            "dataset",
            "decrypt",
            "--key-file",
            str(key_file),
            str(big_sealed),
            str(out),
        ],
        capture_output=True,
        preexec_fn=limit,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert b"Traceback" not in result.stderr
    assert b"custodes: error:" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["big.cdx", "k"]


@pytest.mark.parametrize("operation", ["encrypt", "decrypt"])
def test_a_missing_output_directory_is_refused_not_created(
    small_sealed_or_plain: tuple[Path, Path], tmp_path: Path, operation: str
) -> None:
    plain, sealed = small_sealed_or_plain
    out = tmp_path / "nonexistent" / "x"
    with pytest.raises(DatasetPathError, match="does not exist"):
        if operation == "encrypt":
            encrypt_path(plain, out, KEY, KEY_ID)
        else:
            decrypt_path(sealed, out, KEY)
    assert not (tmp_path / "nonexistent").exists()


def test_a_tree_output_directory_is_created_below_an_existing_one(
    tree: Path, tmp_path: Path
) -> None:
    written = encrypt_path(tree, tmp_path / "out", KEY, KEY_ID)
    assert written and all(p.is_relative_to(tmp_path / "out") for p in written)


@pytest.fixture
def small_sealed_or_plain(tmp_path: Path) -> tuple[Path, Path]:
    plain = tmp_path / "plain"
    plain.write_bytes(b"some data")
    sealed = tmp_path / "plain.cdx"
    encrypt_path(plain, sealed, KEY, KEY_ID)
    return plain, sealed
