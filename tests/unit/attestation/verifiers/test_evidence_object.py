"""The verifiers' shared first read of evidence (``base.evidence_object``), through each
verifier's own parser: evidence given as JSON text is read by the one strict reader."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence, AzTdxEvidence
from custodes.attestation.verifiers.base import evidence_object
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.attestation.verifiers.tpm.evidence import TpmEvidence
from custodes.errors import MalformedEvidence

PARSERS: list[Callable[[object], object]] = [
    SnpEvidence.from_json,
    TdxEvidence.from_json,
    TpmEvidence.from_json,
    AzSnpEvidence.from_json,
    AzTdxEvidence.from_json,
]


def test_object_and_text_read_alike() -> None:
    assert evidence_object({"a": [1]}, "x") == {"a": [1]}
    assert evidence_object('{"a": [1]}', "x") == {"a": [1]}
    assert evidence_object(b'{"a": [1]}', "x") == {"a": [1]}


@pytest.mark.parametrize(
    "text",
    [
        '{"quote": "AA==", "quote": "AQ=="}',  # duplicate key: two readers could disagree
        '{"quote": NaN}',
        '{"quote": "\\ud800"}',  # lone surrogate escape
        "[" * 40 + "]" * 40,  # deeper than the strict reader's bound
        "{",
        '"a string"',
        "[]",
    ],
)
@pytest.mark.parametrize("parse", PARSERS)
def test_evidence_text_is_read_strictly(parse: Callable[[object], object], text: str) -> None:
    with pytest.raises(MalformedEvidence, match="evidence is not"):
        parse(text)


@pytest.mark.parametrize("parse", PARSERS)
def test_non_utf8_evidence_is_refused(parse: Callable[[object], object]) -> None:
    with pytest.raises(MalformedEvidence, match="evidence is not JSON"):
        parse(b'{"quote": "\xff"}')
    with pytest.raises(MalformedEvidence, match="evidence is not JSON"):
        parse('{"quote": "\ud800"}')  # a str holding a lone surrogate


def test_size_bound_before_reading() -> None:
    with pytest.raises(MalformedEvidence, match="SNP evidence is too large"):
        SnpEvidence.from_json(" " * (256 * 1024 + 1))
    with pytest.raises(MalformedEvidence, match="az-snp-vtpm evidence is too large"):
        AzSnpEvidence.from_json(b" " * (1024 * 1024 + 1))
