"""Strict base64 codecs: round trips and every refusal (padding, alphabet, canonical form)."""

from __future__ import annotations

import base64
import os

import pytest

from custodes._internal.b64 import b64std_decode, b64std_encode, b64url_decode, b64url_encode

SAMPLES = [b"", b"\x00", b"\xff", b"ab", b"abc", b"abcd", b"\xfb\xff\xfe", os.urandom(97)]


@pytest.mark.parametrize("data", SAMPLES)
def test_url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert b64url_decode(text) == data


@pytest.mark.parametrize("data", SAMPLES)
def test_std_round_trip(data: bytes) -> None:
    text = b64std_encode(data)
    assert text == base64.b64encode(data).decode()
    assert b64std_decode(text) == data


def test_alphabets() -> None:
    data = b"\xfb\xff\xbf"
    assert b64url_encode(data) == "-_-_"
    assert b64std_encode(data) == "+/+/"


@pytest.mark.parametrize(
    "text",
    [
        "QQ==",  # padding where none is allowed
        "QUE=",
        "QQ=",
        "=",
        "+/+/",  # standard alphabet
        "ab+c",
        "ab/c",
        "QR",  # non-canonical: stray bits in the last character
        "QUF",  # 'F' carries stray bits for two bytes
        "A",  # length % 4 == 1
        "QUFBQ",
        "QUFB QUFB",  # whitespace
        " QUFB",
        "QUFB\n",
        "QUFB\t",
        "QU.B",  # outside both alphabets
        "QUFB\x00",
        "ＱＵＦＢ",  # noqa: RUF001 (fullwidth letters, on purpose)
    ],
)
def test_url_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)


@pytest.mark.parametrize(
    "text",
    [
        "QQ",  # missing padding
        "QUE",
        "QQ=",
        "Q===",
        "QUFB=",  # padding where none is due
        "QUFB====",
        "-_-_",  # url alphabet
        "ab_c",
        "QR==",  # non-canonical trailing bits
        "QUF=",
        "A",
        "QUFBQ",
        "QUFB QUFB",  # whitespace
        " QUFB",
        "QUFB\n",
        "QUFB\r\n",
        "QQ==QUFB",  # padding in the middle
        "QU.B",
        "ＱＵＦＢ",  # noqa: RUF001
    ],
)
def test_std_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        b64std_decode(text)


def test_empty_is_empty() -> None:
    assert b64url_decode("") == b""
    assert b64std_decode("") == b""
