"""The strict document parser as the bottom-layer package exposes it (the broker's view of the
same parser is tested in tests/unit/attestation/test_initdata.py)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

import custodes.attestation.initdata as broker_side
from custodes.initdata import format as fmt
from custodes.initdata.errors import InitDataError, InitDataTooLarge

GOOD = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = """x = 1"""\n'


def _doc(version: str = '"0.1.0"', algorithm: str = '"sha256"', data: str = "[data]\n") -> str:
    return f"version = {version}\nalgorithm = {algorithm}\n{data}"


def test_from_bytes_parses_and_digests_the_exact_bytes() -> None:
    raw = GOOD.replace("\n", "\r\n").encode()
    init_data = fmt.InitData.from_bytes(raw)
    assert init_data.digest == hashlib.sha384(raw).digest()
    assert init_data.raw_bytes == raw and init_data.algorithm == "sha384"
    assert dict(init_data.data) == {"aa.toml": "x = 1"}


def test_broker_side_names_are_the_same_objects() -> None:
    assert broker_side.InitData is fmt.InitData
    assert broker_side.InitDataError is InitDataError
    assert broker_side.MAX_INITDATA_BYTES == fmt.MAX_INITDATA_BYTES
    assert broker_side.INITDATA_VERSION == "0.1.0"


def test_not_utf8() -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.from_bytes(_doc().encode() + b'"k" = "\xff"\n')


def test_lone_surrogate_in_text() -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.parse(_doc(data='[data]\nk = "\ud800"\n'))


def test_oversized() -> None:
    raw = _doc(data="[data]\nk = '" + "x" * fmt.MAX_INITDATA_BYTES + "'\n").encode()
    with pytest.raises(InitDataTooLarge):
        fmt.InitData.from_bytes(raw)
    with pytest.raises(InitDataTooLarge):
        fmt.InitData.parse(raw.decode())


@pytest.mark.parametrize("text", ["not = = toml", "[data", "version = '0.1.0'\nversion = 'x'"])
def test_invalid_toml(text: str) -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.from_bytes(text.encode())


@pytest.mark.parametrize("version", ['"0.2.0"', '"0.1"', '"v0.1.0"', "0.1", '""'])
def test_wrong_version(version: str) -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.parse(_doc(version=version))


@pytest.mark.parametrize(
    "algorithm", ['"sha-256"', '"sha-384"', '"SHA512"', '"sha_256"', '"sha1"', "256"]
)
def test_unsupported_algorithm(algorithm: str) -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.parse(_doc(algorithm=algorithm))


def test_check_algorithm() -> None:
    assert [fmt.check_algorithm(a) for a in fmt.ALGORITHMS] == list(fmt.ALGORITHMS)
    for bad in ("sha-256", "SHA384", "md5", None, 256):
        with pytest.raises(InitDataError):
            fmt.check_algorithm(bad)


@pytest.mark.parametrize(
    "data",
    [
        "[data]\nk = 1\n",
        "[data]\nk = true\n",
        "[data]\nk = ['a']\n",
        "[data]\nk = 2026-01-02\n",
        "[data]\nk.sub = 'x'\n",
        "[data]\n[data.k]\nx = 'y'\n",
    ],
)
def test_non_string_data_values(data: str) -> None:
    with pytest.raises(InitDataError):
        fmt.InitData.parse(_doc(data=data))


def test_bottom_layer_imports_no_server_code() -> None:
    # The guest imports this package; it must not pull the broker in.
    code = (
        "import sys, custodes.initdata.format, custodes.initdata.encoding, "
        "custodes.initdata.binding, custodes.initdata.build\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in ("
        "['custodes','attestation'], ['custodes','kbs'], ['custodes','policy'], "
        "['custodes','rvps'], ['custodes','storage'], ['custodes','guest'])]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == ""
