"""The ``sample`` TEE verifier: no hardware, no signature, proves nothing.

It exists for tests and demos; the Attestation Service refuses it unless the broker enables it
explicitly. It still checks the binding to the session exactly (the report data must decode to
the digest, byte for byte, no padding), so that the protocol path it exercises is the real one.

Evidence: ``{"svn": "<string>", "report_data": "<standard base64 of the digest>"}``.
Claims (upstream's): ``svn``, ``report_data`` (as sent), fixed ``launch_digest`` "abcde",
``platform_version`` 1.4, ``debug`` false, and ``init_data`` (base64 of the init-data digest)
when the guest sent init-data (the sample TEE has no field to bind it to).
"""

from __future__ import annotations

import hmac
from typing import ClassVar, Final

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.verifiers.base import (
    TeeClass,
    VerificationRequest,
    VerifiedClaims,
)
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.errors import BindingMismatch, MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

_FIELDS: Final = frozenset({"svn", "report_data"})


class SampleVerifier:
    tee: ClassVar[Tee] = Tee.SAMPLE

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        evidence = request.evidence
        # 1. Shape: exactly the two string fields.
        if not isinstance(evidence, dict) or set(evidence) != _FIELDS:
            raise MalformedEvidence('sample evidence must be {"svn": ..., "report_data": ...}')
        svn, report_data_b64 = evidence["svn"], evidence["report_data"]
        if not isinstance(svn, str) or not isinstance(report_data_b64, str):
            raise MalformedEvidence("sample evidence fields must be strings")
        # 2. Report data: strict standard base64.
        try:
            report_data = b64std_decode(report_data_b64)
        except ValueError as e:
            raise MalformedEvidence("sample report_data is not standard base64") from e
        # 3. Binding: exactly the session's digest (no padding, no truncation).
        if not hmac.compare_digest(report_data, request.report_data):
            raise BindingMismatch("sample report_data does not match this session's digest")
        claims: JsonObject = {
            "svn": svn,
            "report_data": report_data_b64,
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        }
        if request.init_data_digest is not None:
            claims["init_data"] = b64std_encode(request.init_data_digest)
        return [VerifiedClaims(tee_class=TeeClass.CPU, claims=claims)]


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> SampleVerifier:
    """The registry's factory: the sample TEE has nothing to configure."""
    return SampleVerifier()
