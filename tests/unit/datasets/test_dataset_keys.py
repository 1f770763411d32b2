"""Data keys and key files: raw and text forms, exact sizes, mode 0600, no overwrite."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from custodes.datasets.errors import DatasetKeyError
from custodes.datasets.keys import (
    TEXT_HEADER,
    check_key,
    encode_key_text,
    generate_key,
    parse_key_file,
    read_key_file,
    write_key_file,
)
from custodes.types.secret import Secret


def test_generate_key_is_32_random_bytes() -> None:
    a, b = generate_key(), generate_key()
    assert len(a.reveal()) == 32
    assert a != b
    assert "redacted" in repr(a)


@pytest.mark.parametrize("text", [False, True])
def test_key_file_round_trip_with_mode_0600(tmp_path: Path, text: bool) -> None:
    key = generate_key()
    path = tmp_path / "data.key"
    write_key_file(path, key, text=text)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == key
    raw = path.read_bytes()
    if text:
        assert raw.startswith(TEXT_HEADER) and raw.endswith(b"\n")
    else:
        assert raw == key.reveal()


def test_text_form_without_final_newline(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "k"
    path.write_bytes(encode_key_text(key).rstrip(b"\n"))
    assert read_key_file(path) == key


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"precious")
    with pytest.raises(DatasetKeyError):
        write_key_file(path, generate_key())
    assert path.read_bytes() == b"precious"


def test_write_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DatasetKeyError):
        write_key_file(tmp_path / "link", generate_key())
    assert not (tmp_path / "elsewhere").exists()


def test_write_refuses_a_short_key(tmp_path: Path) -> None:
    with pytest.raises(DatasetKeyError):
        write_key_file(tmp_path / "k", Secret(bytes(16)))
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(31),
        bytes(33),
        bytes(32) + b"\n",  # raw key with a newline: not padded away
        TEXT_HEADER + base64.b64encode(bytes(16)) + b"\n",  # 16 bytes
        TEXT_HEADER + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n",  # unpadded
        TEXT_HEADER + base64.urlsafe_b64encode(b"\xff" * 32) + b"\n",  # url alphabet
        TEXT_HEADER + b" " + base64.b64encode(bytes(32)) + b"\n",  # whitespace
        TEXT_HEADER + base64.b64encode(bytes(32)) + b"\n\n",  # two newlines
        b"custodes-dataset-key-v2\n" + base64.b64encode(bytes(32)) + b"\n",
    ],
)
def test_malformed_key_files(data: bytes) -> None:
    with pytest.raises(DatasetKeyError):
        parse_key_file(data)


def test_unreadable_and_oversized_key_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetKeyError):
        read_key_file(tmp_path / "missing")
    big = tmp_path / "big"
    big.write_bytes(bytes(1 << 20))
    with pytest.raises(DatasetKeyError):
        read_key_file(big)


def test_check_key() -> None:
    key = generate_key()
    assert check_key(key) is key
    with pytest.raises(DatasetKeyError):
        check_key(Secret(b"short"))
