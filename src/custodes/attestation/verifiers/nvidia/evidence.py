"""The ``nvidia`` evidence JSON, as upstream's guest attester sends it::

    {"device_evidence_list": [
        {"arch": "HOPPER", "uuid": "GPU-…",
         "evidence": "<hex (or standard base64) of the SPDM request + response>",
         "certificate": "<standard base64 of the PEM certificate chain, leaf first>"}, …]}

``arch`` is matched case-insensitively, as upstream does (``HOPPER``, ``Hopper``). The report
is hex when it is entirely hex digits, else standard base64 (upstream tries the same two in
that order). ``uuid`` is what the guest says; nothing in the report authenticates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes._internal.b64 import b64std_decode
from custodes.errors import MalformedEvidence

_FIELDS: Final = ("arch", "uuid", "evidence", "certificate")
MAX_DEVICES: Final = 16
ARCHITECTURES: Final = {"hopper": "Hopper", "blackwell": "Blackwell", "ls10": "LS10"}


@dataclass(frozen=True, slots=True)
class DeviceEvidence:
    """One device: upstream's architecture name (``Hopper``…), uuid, report, and the chain
    as sent (standard base64 of PEM; decoded by ``certificate_pem``, so that a verifier can
    look a chain it has verified before up by its text)."""

    arch: str
    uuid: str
    report: bytes
    certificate: str

    def certificate_pem(self) -> bytes:
        try:
            return b64std_decode(self.certificate)
        except ValueError as e:
            raise MalformedEvidence("nvidia evidence: certificate is not standard base64") from e


def _string(obj: Mapping[str, object], key: str, where: str) -> str:
    if key not in obj:
        raise MalformedEvidence(f"nvidia evidence: {where} lacks {key!r}")
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise MalformedEvidence(f"nvidia evidence: {where}.{key} is not a non-empty string")
    return value


def _report(text: str, where: str) -> bytes:
    # Hex first, as upstream. fromhex also skips whitespace, which isalnum() rules out.
    if text.isascii() and text.isalnum():
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass  # not hex: maybe base64
    try:
        return b64std_decode(text)
    except ValueError as e:
        raise MalformedEvidence(
            f"nvidia evidence: {where}.evidence is neither hex nor standard base64"
        ) from e


def _device(value: object, where: str) -> DeviceEvidence:
    if not isinstance(value, dict):
        raise MalformedEvidence(f"nvidia evidence: {where} is not an object")
    arch_text, uuid, report_text, cert_text = (_string(value, k, where) for k in _FIELDS)
    arch = ARCHITECTURES.get(arch_text.lower())
    if arch is None:
        raise MalformedEvidence(f"nvidia evidence: {where}.arch {arch_text!r} is unknown")
    return DeviceEvidence(
        arch=arch, uuid=uuid, report=_report(report_text, where), certificate=cert_text
    )


def parse_evidence(evidence: object) -> tuple[DeviceEvidence, ...]:
    """Step 1: one to sixteen devices."""
    if not isinstance(evidence, dict) or "device_evidence_list" not in evidence:
        raise MalformedEvidence('nvidia evidence must be {"device_evidence_list": [...]}')
    devices = evidence["device_evidence_list"]
    if not isinstance(devices, list) or not devices:
        raise MalformedEvidence("nvidia evidence: device_evidence_list is not a non-empty list")
    if len(devices) > MAX_DEVICES:
        raise MalformedEvidence(f"nvidia evidence: {len(devices)} devices is more than 16")
    return tuple(_device(d, f"device_evidence_list[{i}]") for i, d in enumerate(devices))
