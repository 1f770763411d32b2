"""TDX quote parsing (v4, v5 TDX 1.5 body, trailing zero padding) against real quotes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from custodes.attestation.verifiers.tdx.errors import UnsupportedQuote
from custodes.attestation.verifiers.tdx.quote import (
    MAX_TRAILING_ZERO_PADDING,
    TdAttributes,
    TdxQuote,
)
from custodes.errors import MalformedEvidence


@pytest.fixture(scope="module")
def test_data(vectors: Path) -> Path:
    return vectors / "trustee" / "deps" / "verifier" / "test_data"


@pytest.fixture(scope="module")
def quote4(test_data: Path) -> bytes:
    return (test_data / "tdx_quote_4.dat").read_bytes()


def test_tdx_quote_v4_parses(quote4: bytes) -> None:
    quote = TdxQuote.from_bytes(quote4)
    assert quote.version == 4
    assert quote.body_type is None
    assert quote.header.tee_type == 0x81
    assert quote.header.vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert quote.body.mr_td.hex().startswith("705ee9381b8633a9")
    assert quote.body.tee_tcb_svn2 is None
    assert quote.raw == quote4
    assert quote.trailing_padding == 0
    assert quote.signature_data.pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert len(quote.signature_data.qe_auth_data) == 32


def test_tdx_quote_v5_tdx15_body_parses(test_data: Path) -> None:
    raw = (test_data / "tdx_quote_5.dat").read_bytes()
    quote = TdxQuote.from_bytes(raw)
    assert (quote.version, quote.body_type) == (5, 3)
    assert quote.body.tee_tcb_svn2 is not None and len(quote.body.tee_tcb_svn2) == 16
    assert quote.body.mr_servicetd is not None and len(quote.body.mr_servicetd) == 48
    # REPORTDATA of a v5 quote sits at offset 574 (48 header + 6 descriptor + 520).
    assert quote.report_data == raw[574:638]
    claims = quote.to_json()
    assert (claims["type"], claims["size"], claims["header"]["version"]) == (
        "0300",
        "88020000",
        "0500",
    )
    assert set(claims["body"]) >= {"tee_tcb_svn2", "mr_servicetd"}


def test_tdx_quote_v5_tdx10_body_parses(quote4: bytes) -> None:
    # A v5 quote with body type 2 is the v4 body behind a 6-byte descriptor (built from
    # the real v4 quote; its signature no longer verifies, only parsing is under test).
    raw = struct.pack("<H", 5) + quote4[2:48] + struct.pack("<HI", 2, 584) + quote4[48:]
    quote = TdxQuote.from_bytes(raw)
    assert (quote.version, quote.body_type) == (5, 2)
    assert quote.body == TdxQuote.from_bytes(quote4).body
    assert quote.to_json()["type"] == "0200"


def test_tdx_quote_trailing_zero_padding_is_accepted(test_data: Path) -> None:
    # tdx_quote_6.dat (from a CoCo guest) is a v4 quote in a 5006-byte buffer: 70 zero bytes.
    raw = (test_data / "tdx_quote_6.dat").read_bytes()
    quote = TdxQuote.from_bytes(raw)
    assert quote.trailing_padding == 70
    assert quote.raw == raw[:-70]


def test_tdx_quote_nonzero_trailing_bytes_are_refused(quote4: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(quote4 + b"\x00\x01")


def test_tdx_quote_excessive_padding_is_refused(quote4: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(quote4 + bytes(MAX_TRAILING_ZERO_PADDING + 1))


@pytest.mark.parametrize("length", [0, 47, 48, 631, 632, 636, 4935])
def test_tdx_quote_truncated_is_refused(quote4: bytes, length: int) -> None:
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(quote4[:length])


def _patch(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [
        (0, "<H", 3),  # version
        (2, "<H", 3),  # attestation key type (ECDSA-P384)
        (4, "<I", 0),  # TEE type SGX
    ],
)
def test_tdx_quote_unsupported_header_is_refused(
    quote4: bytes, offset: int, fmt: str, value: int
) -> None:
    with pytest.raises(UnsupportedQuote):
        TdxQuote.from_bytes(_patch(quote4, offset, fmt, value))


def test_tdx_quote_v5_unknown_body_type_is_refused(test_data: Path) -> None:
    raw = (test_data / "tdx_quote_5.dat").read_bytes()
    with pytest.raises(UnsupportedQuote):
        TdxQuote.from_bytes(_patch(raw, 48, "<H", 4))


def test_tdx_quote_v5_wrong_body_size_is_refused(test_data: Path) -> None:
    raw = (test_data / "tdx_quote_5.dat").read_bytes()
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(_patch(raw, 50, "<I", 584))


def test_tdx_quote_signature_length_mismatch_is_refused(quote4: bytes) -> None:
    # Signature data length one byte longer than what is there.
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(_patch(quote4, 632, "<I", len(quote4) - 636 + 1))


def test_tdx_quote_certification_size_mismatch_is_refused(quote4: bytes) -> None:
    # Outer certification data size (at 636 + 128 + 2) one byte short of the data present.
    (size,) = struct.unpack_from("<I", quote4, 766)
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(_patch(quote4, 766, "<I", size - 1))


def test_tdx_quote_other_certification_type_is_refused(quote4: bytes) -> None:
    with pytest.raises(UnsupportedQuote):
        TdxQuote.from_bytes(_patch(quote4, 764, "<H", 5))


def test_tdx_quote_oversized_input_is_refused(quote4: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        TdxQuote.from_bytes(quote4 + bytes(70 * 1024))


def test_tdx_td_attributes_flags() -> None:
    attrs = TdAttributes.from_bytes(((1 << 0) | (1 << 30) | (1 << 63)).to_bytes(8, "little"))
    assert attrs.to_json() == {
        "debug": True,
        "key_locker": False,
        "perfmon": True,
        "protection_keys": True,
        "septve_disable": False,
    }
    with pytest.raises(MalformedEvidence):
        TdAttributes.from_bytes(bytes(7))
