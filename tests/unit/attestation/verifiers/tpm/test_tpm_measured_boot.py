"""The tpm verifier with a firmware event log in the evidence (``uefi_eventlog``): a real swtpm
whose PCRs are extended with the recorded VM boot's digests, quoted by the real TPM attester
with the log attached, verified, and refused when the log is edited or does not replay."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.eventlog import ALG_SHA256, CcEventLog
from custodes.attestation.eventlog.measured_boot import EventDataMismatch, ReplayMismatch
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.attestation.verifiers.tpm.evidence import TpmEvidence
from custodes.errors import MalformedEvidence
from custodes.guest.attester.tpm import TpmAttester
from custodes.types.tee import Tee
from swtpm import running_swtpm

VM = Path(__file__).parents[5] / "tests" / "vectors" / "vm"
LOG_PATH = VM / "ovmf-direct-boot.eventlog"
LOG = LOG_PATH.read_bytes()
NONCE = hashlib.sha384(b"measured boot").digest()


@contextmanager
def _booted() -> Iterator[TpmAttester]:
    """A swtpm whose PCRs went through the recorded boot, and an attester sending the log."""
    with running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti, eventlog=LOG_PATH)
        for entry in CcEventLog.from_bytes(LOG).entries:
            if entry.type_name == "EV_NO_ACTION":
                continue
            (digest,) = [d.digest for d in entry.digests if d.algorithm == ALG_SHA256]
            attester.extend_pcr_digest(entry.index, digest)
        yield attester


@pytest.fixture(scope="module")
def booted() -> Iterator[TpmAttester]:
    with _booted() as attester:
        yield attester


@pytest.fixture(scope="module")
def evidence(booted: TpmAttester) -> dict[str, Any]:
    produced = booted.evidence(NONCE)
    assert isinstance(produced, dict)
    return produced


def _verify(evidence: object) -> dict[str, Any]:
    (claims,) = TpmVerifier().verify(VerificationRequest(Tee.TPM, evidence, NONCE, None))
    return dict(claims.claims)


def test_the_attester_sends_the_log(evidence: dict[str, Any]) -> None:
    assert b64std_decode(evidence["uefi_eventlog"]) == LOG
    assert TpmEvidence.from_json(evidence).eventlog == LOG


def test_measured_boot_claims(evidence: dict[str, Any]) -> None:
    claims = _verify(evidence)
    boot = claims["measured_boot"]
    assert boot["kernel"] == "09267984c90e4ca358fc6500d30daf0ec8dfc3a0bc972f697066568e0a065a09"
    assert boot["initrd"] == "ca4d17a7df5817ed1f77368bfc7a7e278ac3cdcc01b8c251af900ff86fc83b20"
    assert boot["firmware"]["pcr0"] == claims["pcr00"]
    assert boot["secure_boot"]["enabled"] is False
    assert boot["pcrs"] == [0, 1, 2, 3, 4, 5, 6, 7, 9]


def test_evidence_without_a_log_has_no_measured_boot_claims(evidence: dict[str, Any]) -> None:
    upstream = {k: v for k, v in evidence.items() if k != "uefi_eventlog"}
    claims = _verify(upstream)
    assert "measured_boot" not in claims
    assert "pcr04" in claims


def test_an_edited_event_is_refused(evidence: dict[str, Any]) -> None:
    name = "SecureBoot".encode("utf-16-le")
    position = LOG.find(name) + len(name)
    edited = copy.deepcopy(evidence)
    edited["uefi_eventlog"] = b64std_encode(LOG[:position] + b"\x01" + LOG[position + 1 :])
    with pytest.raises(EventDataMismatch):
        _verify(edited)


def test_a_log_of_another_boot_is_refused(evidence: dict[str, Any]) -> None:
    # The recorded log with its last PCR 9 event (the initrd) swapped for another initrd's.
    initrd = bytes.fromhex("ca4d17a7df5817ed1f77368bfc7a7e278ac3cdcc01b8c251af900ff86fc83b20")
    other = copy.deepcopy(evidence)
    other["uefi_eventlog"] = b64std_encode(
        LOG.replace(initrd, hashlib.sha256(b"another initrd").digest())
    )
    with pytest.raises(ReplayMismatch, match="PCR 9"):
        _verify(other)


def test_a_pcr_extended_after_the_log_is_refused() -> None:
    with _booted() as attester:  # its own TPM: the module's stays as the recorded boot left it
        attester.extend_pcr(4, b"a boot application the log does not show")
        produced = attester.evidence(NONCE)
    with pytest.raises(ReplayMismatch, match="PCR 4"):
        _verify(produced)


@pytest.mark.parametrize("value", ["not base64!", 17, "AAAA"])
def test_a_malformed_log_field_is_refused(evidence: dict[str, Any], value: object) -> None:
    bad = copy.deepcopy(evidence)
    bad["uefi_eventlog"] = value
    with pytest.raises(MalformedEvidence):
        _verify(bad)
