"""The TDX evidence JSON (upstream's ``TdxEvidence``)."""

from __future__ import annotations

import base64
import json

import pytest

from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.errors import MalformedEvidence

QUOTE = b"\x04\x00quote bytes"
LOG = b"event log"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_tdx_evidence_with_event_log() -> None:
    evidence = TdxEvidence.from_json({"cc_eventlog": _b64(LOG), "quote": _b64(QUOTE)})
    assert evidence == TdxEvidence(quote=QUOTE, cc_eventlog=LOG)


@pytest.mark.parametrize("log", [None, "", "absent"])
def test_tdx_evidence_without_event_log(log: str | None) -> None:
    doc: dict[str, object] = {"quote": _b64(QUOTE)}
    if log != "absent":
        doc["cc_eventlog"] = log
    assert TdxEvidence.from_json(doc).cc_eventlog is None


def test_tdx_evidence_json_text_and_unknown_members() -> None:
    text = json.dumps({"quote": _b64(QUOTE), "aa_eventlog": "old guests sent this"})
    assert TdxEvidence.from_json(text).quote == QUOTE
    assert TdxEvidence.from_json(text.encode()).quote == QUOTE


@pytest.mark.parametrize(
    "evidence",
    [
        "not json",
        [1, 2],
        {},
        {"quote": ""},
        {"quote": 5},
        {"quote": _b64(QUOTE).rstrip("=")},  # unpadded
        {"quote": base64.urlsafe_b64encode(b"\xfb\xff\xfe").decode()},  # URL alphabet
        {"quote": _b64(QUOTE), "cc_eventlog": 7},
        {"quote": _b64(QUOTE), "cc_eventlog": "not base64!"},
    ],
)
def test_tdx_evidence_malformed(evidence: object) -> None:
    with pytest.raises(MalformedEvidence):
        TdxEvidence.from_json(evidence)
