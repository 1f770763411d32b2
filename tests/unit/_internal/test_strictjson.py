"""The one strict JSON reader (``_internal/strictjson.py``) and every parser of untrusted JSON
that reads through it: each refuses exactly the same inputs, each with its own error class.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal import strictjson
from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import SystemClock
from custodes._internal.jws import TOKEN_MAX_DEPTH, verify_compact
from custodes.attestation.verifiers.azure.errors import HclReportInvalid
from custodes.attestation.verifiers.azure.hcl import RuntimeData
from custodes.attestation.verifiers.base import evidence_object
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.cli._evidence_input import OfflineEvidence
from custodes.errors import (
    CustodesError,
    MalformedEvidence,
    MalformedMessage,
    TokenError,
)
from custodes.k8s.admission import MAX_JSON_DEPTH, parse_json
from custodes.k8s.errors import AdmissionReviewError
from custodes.protocol.messages import parse_json_body
from custodes.sealed.errors import InvalidSigningKey, SealedHeaderError
from custodes.sealed.format import loads_object
from custodes.sealed.keys import parse_jwk_bytes
from custodes.types.tee import Tee

# What every reader refuses, whatever its depth limit.
REFUSED = {
    "duplicate-key": b'{"a": 1, "a": 2}',
    "nan": b'{"a": NaN}',
    "infinity": b'{"a": -Infinity}',
    "overflowing-number": b'{"a": 1e999}',
    "lone-surrogate": b'{"a": "\\ud800"}',
    "not-utf8": b'{"a": "\xff"}',
    "bom": b'\xef\xbb\xbf{"a": 1}',
    "not-json": b'{"a": 1',
}


def _deep(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


def _token(header: bytes) -> None:
    """A compact JWS whose header is ``header``: refused before any key is tried."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    verify_compact(f"{b64url_encode(header)}.e30.{b64url_encode(bytes(64))}", [key])


def _offline_evidence(raw: bytes) -> None:
    OfflineEvidence(Tee.SAMPLE, "evidence.json", raw, SystemClock(), SampleVerifier()).verify(
        bytes(32), None
    )


# (name, parse, error class, depth limit)
READERS: list[tuple[str, Callable[[bytes], object], type[CustodesError], int]] = [
    ("kbs-message", parse_json_body, MalformedMessage, strictjson.DEFAULT_MAX_DEPTH),
    ("jws-token", _token, TokenError, TOKEN_MAX_DEPTH),
    ("hcl-runtime-data", RuntimeData.from_bytes, HclReportInvalid, strictjson.DEFAULT_MAX_DEPTH),
    ("admission-review", parse_json, AdmissionReviewError, MAX_JSON_DEPTH),
    (
        "sealed-header",
        lambda raw: loads_object(raw, SealedHeaderError, "header"),
        SealedHeaderError,
        strictjson.DEFAULT_MAX_DEPTH,
    ),
    ("sealed-key", parse_jwk_bytes, InvalidSigningKey, strictjson.DEFAULT_MAX_DEPTH),
    ("offline-evidence", _offline_evidence, MalformedEvidence, strictjson.DEFAULT_MAX_DEPTH),
    (
        "verifier-evidence-text",
        lambda raw: evidence_object(raw, "snp"),
        MalformedEvidence,
        strictjson.DEFAULT_MAX_DEPTH,
    ),
]
IDS = [name for name, *_ in READERS]


@pytest.mark.parametrize(("name", "parse", "error", "depth"), READERS, ids=IDS)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_every_reader_refuses_the_same_json(
    name: str,
    parse: Callable[[bytes], object],
    error: type[CustodesError],
    depth: int,
    case: str,
) -> None:
    with pytest.raises(error) as refused:
        parse(REFUSED[case])
    # The reader's own class, not the shared one leaking through a parser that owns another.
    assert type(refused.value) is error


@pytest.mark.parametrize(("name", "parse", "error", "depth"), READERS, ids=IDS)
def test_every_reader_bounds_nesting(
    name: str, parse: Callable[[bytes], object], error: type[CustodesError], depth: int
) -> None:
    with pytest.raises(error, match=f"nested deeper than {depth}"):
        parse(_deep(depth + 1))


def test_default_error_and_chained_cause() -> None:
    with pytest.raises(MalformedMessage, match="not UTF-8") as refused:
        strictjson.loads(b"\xff")
    assert isinstance(refused.value.__cause__, UnicodeDecodeError)


def test_the_callers_error_carries_the_reason() -> None:
    with pytest.raises(ConfigErrorForTest, match=r"^x: duplicate key in JSON object$"):
        strictjson.loads(b'{"a":1,"a":1}', error=lambda why: ConfigErrorForTest(f"x: {why}"))


def test_only_bytes_are_read() -> None:
    assert strictjson.loads('{"é": [1, 2.5, null]}'.encode()) == {"é": [1, 2.5, None]}
    with pytest.raises(MalformedMessage, match="body is not bytes"):
        strictjson.loads("{}")  # type: ignore[arg-type]


def test_nesting_at_the_limit_is_accepted() -> None:
    assert strictjson.loads(_deep(strictjson.DEFAULT_MAX_DEPTH)) is not None
    assert parse_json(_deep(MAX_JSON_DEPTH)) is not None


class ConfigErrorForTest(CustodesError):
    code = "test"
