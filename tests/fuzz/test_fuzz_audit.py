"""Fuzz the audit log readers: one stored entry (``AuditEntry.from_bytes``), the anchor text
``SEQ:HASH``, and a whole JSON Lines export verified against the signing key.

``data/audit-export.jsonl`` is three entries and the export's checkpoint, written by
custodes' own ``AuditLog`` with the fixed key below (there is no upstream format to take
vectors from); see docs/fuzzing.md.
"""

from __future__ import annotations

import io
import json

from cryptography.hazmat.primitives.asymmetric import ec
from fuzz_support import (
    FUZZ,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    data_file,
    dumps,
    mutated_json,
    text_inputs,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes.audit.entry import AuditEntry, key_id
from custodes.audit.verify import VerifyReport, parse_head, verify_jsonl

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

KEY = ec.derive_private_key(0xA0D17, ec.SECP256R1()).public_key()
KEYS = {key_id(KEY): KEY}
EXPORT = data_file("audit-export.jsonl")
LINES = EXPORT.splitlines()
HEADS = ["2:bbca39feebde0186a66ca2de485d8fffe19887d2657c78c80241fc7e85a7e85e", "0:" + "0" * 64]


def test_seeds_parse() -> None:
    assert [AuditEntry.from_bytes(line).seq for line in LINES] == [0, 1, 2, 3]
    report = verify_jsonl(io.BytesIO(EXPORT), KEYS, expected_head=parse_head(HEADS[0]))
    assert report.ok and report.count == 4 and report.complete


@FUZZ
@given(raw=byte_inputs(LINES) | mutated_json([json.loads(line) for line in LINES]).map(dumps))
def test_fuzz_audit_entry(raw: bytes) -> None:
    check("audit.entry", AuditEntry.from_bytes, raw, AuditEntry)


@FUZZ
@given(text=text_inputs(HEADS))
def test_fuzz_audit_anchor(text: str) -> None:
    check("audit.anchor", parse_head, text, tuple)


@st.composite
def exports(draw: st.DrawFn) -> bytes:
    """The export with one line mutated (as JSON or as bytes), or all of it byte-mutated."""
    if draw(st.booleans()):
        return draw(byte_inputs([EXPORT]))
    lines = list(LINES)
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = draw(mutated_json([json.loads(lines[i])]).map(dumps) | byte_inputs([lines[i]]))
    return b"\n".join(lines) + b"\n"


@FUZZ
@given(export=exports())
def test_fuzz_audit_export(export: bytes) -> None:
    def verify(raw: bytes) -> VerifyReport:
        report = verify_jsonl(io.BytesIO(raw), KEYS)
        assert report.ok or report.error is not None
        return report

    check("audit.export", verify, export, VerifyReport)
