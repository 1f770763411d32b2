"""Fuzz the TDX parsers: the DCAP quote (v4/v5), the CC event log (CCEL) and the evidence JSON."""

from __future__ import annotations

import struct

import pytest
from fuzz_support import (
    FUZZ,
    HOSTILE_JSON,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    dumps,
    json_or_text_inputs,
    json_values,
    mutated,
    mutated_member,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.eventlog.ccel import CcEventLog
from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.errors import MalformedEvidence

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

QUOTES = [
    vector("trustee/deps/verifier/test_data/tdx_quote_4.dat"),
    vector("trustee/deps/verifier/test_data/tdx_quote_5.dat"),
    vector("trustee/deps/verifier/test_data/tdx_quote_6.dat"),
    vector("dcap-qvl/tdx_quote_outdated"),
]


def _trimmed(raw: bytes) -> bytes:
    """An event log without most of the unused tail of its ACPI area (up to a megabyte of
    0xFF or zeros): the shortest cut, at a power of two past the last non-filler byte, that
    still parses as the whole log does."""
    end = len(raw.rstrip(b"\xff").rstrip(b"\x00").rstrip(b"\xff"))
    whole = CcEventLog.from_bytes(raw)
    for pad in (16 << i for i in range(20)):
        try:
            if CcEventLog.from_bytes(raw[: end + pad]) == whole:
                return raw[: end + pad]
        except MalformedEvidence:
            continue
    return raw


EVENT_LOGS = [
    _trimmed(vector(f"trustee/deps/eventlog/test_data/{name}"))
    for name in ("CCEL_data", "CCEL_data_ovmf", "CCEL_data_grub", "CCEL_AAEL_alibabacloud")
]


def _spec_id_header(log: bytes) -> bytes:
    """The first event of a log (the Spec ID event): index, type, SHA-1 digest, size, body."""
    (size,) = struct.unpack_from("<I", log, 28)
    return log[: 32 + size]


AAEL_TAG = struct.pack("<I", 0x4141454C)


def aael_log(content: bytes) -> bytes:
    """A log of one attestation-agent event (EV_EVENT_TAG, tag "AAEL") whose content is
    ``content``: the entry upstream's guest writes as "<domain> <operation> <content>"."""
    tagged = b"domain operation " + content
    event = AAEL_TAG + struct.pack("<I", len(tagged)) + tagged
    entry = struct.pack("<III", 1, 0x6, 0) + struct.pack("<I", len(event)) + event
    return _spec_id_header(EVENT_LOGS[0]) + entry + b"\xff" * 16


EVIDENCE = {"quote": b64std_encode(QUOTES[0]), "cc_eventlog": b64std_encode(EVENT_LOGS[0])}


def _quote(data: bytes) -> TdxQuote:
    quote = TdxQuote.from_bytes(data)
    quote.to_json()  # the claims the verifier exposes, from the parsed fields
    assert len(quote.report_data) == 64
    return quote


def _event_log(data: bytes) -> CcEventLog:
    log = CcEventLog.from_bytes(data)
    log.to_json()  # event details are decoded here (device paths, EFI variables, tags)
    for index in range(4):
        assert len(log.replay(index)) == 48
    return log


def test_seeds_parse() -> None:
    for raw in QUOTES:
        assert isinstance(_quote(raw), TdxQuote)
    for raw in EVENT_LOGS:
        assert _event_log(raw).entries
    aael = _event_log(aael_log(b'{"a": 1}')).entries[0].details
    assert aael.data == {"content": {"a": 1}, "domain": "domain", "operation": "operation"}
    assert TdxEvidence.from_json(EVIDENCE).quote == QUOTES[0]


@FUZZ
@given(data=byte_inputs(QUOTES))
def test_fuzz_tdx_quote(data: bytes) -> None:
    check("tdx.quote", _quote, data, TdxQuote)


AAEL_CONTENTS = st.one_of(
    st.sampled_from(HOSTILE_JSON), json_values.map(dumps), mutated([b'{"a": [1, "x"]}'])
)


@FUZZ
@given(data=byte_inputs(EVENT_LOGS) | AAEL_CONTENTS.map(aael_log))
def test_fuzz_tdx_ccel(data: bytes) -> None:
    check("tdx.ccel", _event_log, data, CcEventLog)


@FUZZ
@given(
    evidence=st.one_of(
        json_or_text_inputs([EVIDENCE, {"quote": EVIDENCE["quote"], "cc_eventlog": None}]),
        mutated_member(EVIDENCE, ("quote",), b64std_decode, b64std_encode),
        mutated_member(EVIDENCE, ("cc_eventlog",), b64std_decode, b64std_encode),
    )
)
def test_fuzz_tdx_evidence(evidence: object) -> None:
    def parse(value: object) -> TdxEvidence:
        parsed = TdxEvidence.from_json(value)
        _event_log(parsed.cc_eventlog) if parsed.cc_eventlog else None
        _quote(parsed.quote)
        return parsed

    check("tdx.evidence", parse, evidence, TdxEvidence)


# --- regressions found by these harnesses -------------------------------------------------


def test_regression_tdx_evidence_deeply_nested_json_text() -> None:
    """TdxEvidence.from_json let json's RecursionError escape on deeply nested text."""
    with pytest.raises(MalformedEvidence):
        TdxEvidence.from_json(b"[" * 100_000)


def test_regression_ccel_aael_deeply_nested_content() -> None:
    """An AAEL event whose content nests too deeply for json escaped as RecursionError; it is
    now kept as text, as other content that is not JSON is."""
    log = CcEventLog.from_bytes(aael_log(b"[" * 100_000))
    assert log.entries[0].details.data == {
        "content": "[" * 100_000,
        "domain": "domain",
        "operation": "operation",
    }
