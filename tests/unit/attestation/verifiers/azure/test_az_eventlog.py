"""Step 6b of the Azure verifiers: the ``cc_eventlog`` of v1/v2 evidence (AA event-log
entries in TCG2 format, guest-components #1605) replayed against the quoted vTPM PCRs
(upstream trustee #1565).

Real and synthetic parts: the full az-snp-vtpm path runs on upstream's real v2 evidence, whose
PCR 23 (where an Azure guest's runtime events go) is still zero and whose PCRs 17-22 are at
their 0xFF reset value. So on real evidence a log without extends verifies and any extend of
a PCR is refused. A log that does extend PCRs can only be matched by a quote signed over
those PCR values, which no vector holds: those cases use the synthetic vTPM quote of
``az_test_helpers`` (a test AK), through the same ``verify_vtpm`` step the verifiers call.
The logs are built here in the TCG2 layout the guest writes (a Spec ID Event03 header
declaring SHA-256, then ``EV_EVENT_TAG`` entries with the AAEL tag).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from az_test_helpers import (
    CHALLENGE,
    FROZEN_NOW,
    V2_REPORT_DATA,
    load_json,
    rsa_jwk,
    synthetic_quote,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzSnpVtpmVerifier, AzureVerifierConfig
from custodes.attestation.verifiers.azure.errors import EventLogReplayMismatch
from custodes.attestation.verifiers.azure.eventlog import replay_eventlog, reset_value
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence, AzTdxEvidence
from custodes.attestation.verifiers.azure.hcl import RuntimeData
from custodes.attestation.verifiers.azure.vtpm import verify_vtpm
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.errors import MalformedEvidence
from custodes.types.tee import Tee

ALG_SHA256, ALG_SHA384 = 0x000B, 0x000C
EV_NO_ACTION, EV_EVENT_TAG = 0x3, 0x6
AAEL_TAG = 0x4141454C
RUNTIME_PCR = 23


def header(algorithms: tuple[tuple[int, int], ...] = ((ALG_SHA256, 32),)) -> bytes:
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    body += struct.pack("<I", len(algorithms))
    body += b"".join(struct.pack("<HH", a, s) for a, s in algorithms)
    body += b"\x00"
    return struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(body)) + body


def aael_event(domain: str, operation: str, content: str) -> bytes:
    tagged = f"{domain} {operation} {content}".encode()
    return struct.pack("<II", AAEL_TAG, len(tagged)) + tagged


def entry(
    pcr: int, event: bytes, *, event_type: int = EV_EVENT_TAG, digests: list[tuple[int, bytes]]
) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests))
    out += b"".join(struct.pack("<H", a) + d for a, d in digests)
    return out + struct.pack("<I", len(event)) + event


def aael(pcr: int, content: str) -> tuple[bytes, bytes]:
    """(log entry, its SHA-256 digest) of one AAEL event measured into ``pcr``."""
    event = aael_event("github.com/confidential-containers", "PodSpec", content)
    digest = hashlib.sha256(event).digest()
    return entry(pcr, event, digests=[(ALG_SHA256, digest)]), digest


def extended(start: bytes, *digests: bytes) -> bytes:
    value = start
    for d in digests:
        value = hashlib.sha256(value + d).digest()
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the full path on upstream's real v2 evidence ------------------------------------------


@pytest.fixture(scope="module")
def verifier() -> AzSnpVtpmVerifier:
    return AzSnpVtpmVerifier(AzureVerifierConfig(clock=FrozenClock(FROZEN_NOW)))


@pytest.fixture
def v2(vectors: Path) -> dict[str, Any]:
    evidence: dict[str, Any] = load_json(vectors, "az-snp-vtpm", "evidence-v2.json")
    return evidence


def _verify(verifier: AzSnpVtpmVerifier, evidence: dict[str, Any]) -> dict[str, Any]:
    request = VerificationRequest(Tee.AZ_SNP_VTPM, evidence, V2_REPORT_DATA, None)
    [result] = verifier.verify(request)
    return result.claims


def test_real_v2_quote_pcrs_are_at_their_reset_values(v2: dict[str, Any]) -> None:
    pcrs = [bytes.fromhex(p) for p in v2["tpm_quote"]["pcrs"]]
    assert pcrs[RUNTIME_PCR] == reset_value(RUNTIME_PCR) == bytes(32)
    assert all(pcrs[i] == reset_value(i) == b"\xff" * 32 for i in range(17, 23))


def test_real_v2_with_a_log_without_extends_verifies(
    verifier: AzSnpVtpmVerifier, v2: dict[str, Any]
) -> None:
    # Only informational (EV_NO_ACTION) events: nothing was extended, PCR 23 stays zero.
    note = entry(RUNTIME_PCR, b"note", event_type=EV_NO_ACTION, digests=[(ALG_SHA256, bytes(32))])
    claims = _verify(verifier, {**v2, "cc_eventlog": b64(header() + note)})
    assert claims["tpm"]["pcr23"] == "00" * 32
    [logged] = claims["uefi_event_logs"]
    assert (logged["index"], logged["type_name"]) == (RUNTIME_PCR, "EV_NO_ACTION")


def test_real_v2_without_a_log_has_no_log_claims(
    verifier: AzSnpVtpmVerifier, v2: dict[str, Any]
) -> None:
    assert "uefi_event_logs" not in _verify(verifier, v2)
    assert "uefi_event_logs" not in _verify(verifier, {**v2, "cc_eventlog": None})


@pytest.mark.parametrize("pcr", [RUNTIME_PCR, 17, 8])
def test_real_v2_with_a_log_that_does_not_replay_is_refused(
    verifier: AzSnpVtpmVerifier, v2: dict[str, Any], pcr: int
) -> None:
    # The quote says PCR 23 (8) is zero and PCR 17 is 0xFF..FF: no extend can have happened.
    line, _ = aael(pcr, '{"image":"registry.example/app@sha256:00"}')
    with pytest.raises(EventLogReplayMismatch, match=f"does not replay to the quoted PCR {pcr}"):
        _verify(verifier, {**v2, "cc_eventlog": b64(header() + line)})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "not padded standard base64"),
        ("AAAA", "event log"),  # three zero bytes: a truncated header
        (7, "is not base64"),
        ("A" * (700 * 1024), "at most"),
    ],
)
def test_real_v2_with_a_malformed_log_is_refused(
    verifier: AzSnpVtpmVerifier, v2: dict[str, Any], value: object, message: str
) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        _verify(verifier, {**v2, "cc_eventlog": value})


def test_the_log_round_trips_in_both_evidence_kinds(vectors: Path, v2: dict[str, Any]) -> None:
    log = header() + aael(RUNTIME_PCR, "x")[0]
    snp = AzSnpEvidence.from_json({**v2, "cc_eventlog": b64(log)})
    assert snp.cc_eventlog == log
    assert AzSnpEvidence.from_json(snp.to_json()) == snp
    assert "cc_eventlog" not in AzSnpEvidence.from_json(v2).to_json()
    tdx_v1 = load_json(vectors, "az-tdx-vtpm", "evidence-v1.json")
    tdx = AzTdxEvidence.from_json({**tdx_v1, "cc_eventlog": b64(log)})
    assert tdx.cc_eventlog == log
    assert AzTdxEvidence.from_json(tdx.to_json()) == tdx


def test_version_0_evidence_has_no_log(vectors: Path) -> None:
    v0 = load_json(vectors, "az-snp-vtpm", "evidence-v0.json")
    assert AzSnpEvidence.from_json({**v0, "cc_eventlog": "garbage"}).cc_eventlog is None


# --- replay with extends: a synthetic vTPM quote (no vector extends a PCR) -------------------


@pytest.fixture(scope="module")
def ak() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _quote_over(ak: rsa.RSAPrivateKey, pcrs: dict[int, bytes]) -> dict[str, Any]:
    """verify_vtpm's arguments for a synthetic quote whose PCRs are reset values but ``pcrs``."""
    values = tuple(pcrs.get(i, reset_value(i)) for i in range(24))
    quote = synthetic_quote(ak, CHALLENGE, values)
    runtime = RuntimeData.from_bytes(json.dumps({"keys": [rsa_jwk(ak.public_key())]}).encode())
    return {
        "version": 1,
        "runtime": runtime,
        "quote": quote,
        "attest": TpmsAttest.from_bytes(quote.message),
        "report_data": CHALLENGE,
        "init_data_digest": None,
    }


def test_runtime_events_replay_to_the_quoted_pcrs(ak: rsa.RSAPrivateKey) -> None:
    first, d1 = aael(RUNTIME_PCR, '{"container":"app","image":"sha256:11"}')
    second, d2 = aael(RUNTIME_PCR, '{"container":"sidecar","image":"sha256:22"}')
    drtm, d3 = aael(17, "drtm")  # a DRTM PCR starts from 0xFF..FF
    log = header() + first + drtm + second
    args = _quote_over(
        ak, {RUNTIME_PCR: extended(bytes(32), d1, d2), 17: extended(b"\xff" * 32, d3)}
    )
    claims = verify_vtpm(**args, eventlog=log)
    events = claims["uefi_event_logs"]
    assert [e["index"] for e in events] == [RUNTIME_PCR, 17, RUNTIME_PCR]
    assert events[0]["details"]["unicode_name"] == "AAEL"
    assert events[0]["details"]["data"]["content"] == {"container": "app", "image": "sha256:11"}
    assert events[2]["digest_matches_event"] is True


def test_events_out_of_order_missing_or_added_do_not_replay(ak: rsa.RSAPrivateKey) -> None:
    first, d1 = aael(RUNTIME_PCR, "one")
    second, d2 = aael(RUNTIME_PCR, "two")
    args = _quote_over(ak, {RUNTIME_PCR: extended(bytes(32), d1, d2)})
    for bad in (second + first, first, first + second + second):
        with pytest.raises(EventLogReplayMismatch, match="PCR 23"):
            verify_vtpm(**args, eventlog=header() + bad)


def test_a_tampered_event_digest_does_not_replay(ak: rsa.RSAPrivateKey) -> None:
    line, digest = aael(RUNTIME_PCR, "one")
    args = _quote_over(ak, {RUNTIME_PCR: extended(bytes(32), digest)})
    forged = line.replace(digest, hashlib.sha256(b"other").digest())
    with pytest.raises(EventLogReplayMismatch):
        verify_vtpm(**args, eventlog=header() + forged)


def test_an_extend_the_replay_cannot_account_for_is_refused(ak: rsa.RSAPrivateKey) -> None:
    args = _quote_over(ak, {})
    event = aael_event("d", "o", "c")
    sha384_only = entry(RUNTIME_PCR, event, digests=[(ALG_SHA384, hashlib.sha384(event).digest())])
    both = header(((ALG_SHA256, 32), (ALG_SHA384, 48)))
    with pytest.raises(MalformedEvidence, match="0 SHA-256 digests, not one"):
        verify_vtpm(**args, eventlog=both + sha384_only)
    twice = entry(RUNTIME_PCR, event, digests=[(ALG_SHA256, bytes(32))] * 2)
    with pytest.raises(MalformedEvidence, match="2 SHA-256 digests"):
        verify_vtpm(**args, eventlog=header() + twice)
    with pytest.raises(MalformedEvidence, match="does not declare SHA-256"):
        verify_vtpm(**args, eventlog=header(((ALG_SHA384, 48),)))
    with pytest.raises(MalformedEvidence, match="names PCR 24"):
        verify_vtpm(**args, eventlog=header() + aael(24, "x")[0])


def test_a_log_extending_a_pcr_outside_the_quote_is_refused() -> None:
    line, digest = aael(RUNTIME_PCR, "x")
    pcrs = [reset_value(i) for i in range(24)]
    pcrs[RUNTIME_PCR] = extended(bytes(32), digest)
    assert len(replay_eventlog(header() + line, pcrs, tuple(range(24))).entries) == 1
    with pytest.raises(EventLogReplayMismatch, match="does not cover"):
        replay_eventlog(header() + line, pcrs, tuple(range(23)))
