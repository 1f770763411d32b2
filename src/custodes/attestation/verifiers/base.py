"""The interface every TEE verifier implements.

A verifier is a numbered checklist: parse the evidence into frozen typed objects, verify the
signatures and chains, check the binding of the evidence to the session (report data) and to
the init-data, and return upstream's claim names so that upstream's policies work unchanged.
Every failed step raises its own :class:`custodes.errors.VerificationError` subclass.

Verifiers are synchronous and CPU-bound; the broker runs them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from custodes._internal import strictjson
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee


class TeeClass(StrEnum):
    """The class of a piece of evidence; names the EAR submodule (``cpu0``, ``gpu0``, …)."""

    CPU = "cpu"
    GPU = "gpu"
    SWITCH = "switch"
    PPCIE = "ppcie"
    DCU = "dcu"


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    """What the Attestation Service asks of a verifier.

    ``report_data`` is the binding digest exactly as computed from the runtime data (e.g. 48
    bytes for SHA-384), not padded: each verifier applies its TEE's documented layout rule and
    rejects lengths that do not fit instead of truncating.
    ``init_data_digest`` is the digest of the init-data TOML when the guest sent one.
    """

    tee: Tee
    evidence: object
    report_data: bytes
    init_data_digest: bytes | None = None


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """Claims for one piece of evidence, with upstream's claim names.

    As upstream, ``claims`` may contain ``report_data`` and ``init_data`` (the Attestation
    Service moves them out of the TEE object when it builds the annotated evidence).
    """

    tee_class: TeeClass
    claims: JsonObject


class Verifier(Protocol):
    """Verifies one TEE's evidence."""

    tee: ClassVar[Tee]

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        """Verify ``request.evidence``; return its claims or raise ``EvidenceError``."""
        ...


def evidence_object(
    evidence: object, tee: str, *, max_size: int | None = None
) -> Mapping[str, object]:
    """The first read of every verifier's step 1: the evidence as a JSON object.

    The broker hands over the object (already read strictly with the protocol message); a
    caller may also hand over its JSON text, read here with the one strict reader
    (:mod:`custodes._internal.strictjson`) after the verifier's size bound, so no path reads
    evidence less strictly than the broker. Anything else is
    :class:`~custodes.errors.MalformedEvidence` naming ``tee``.
    """
    if isinstance(evidence, str | bytes | bytearray):
        if max_size is not None and len(evidence) > max_size:
            raise MalformedEvidence(f"{tee} evidence is too large")
        # A lone surrogate in a str passes through as bytes that are not UTF-8: refused below.
        if isinstance(evidence, str):
            body = evidence.encode("utf-8", "surrogatepass")
        else:
            body = bytes(evidence)
        evidence = strictjson.loads(
            body, error=lambda reason: MalformedEvidence(f"{tee} evidence is not JSON: {reason}")
        )
    if not isinstance(evidence, Mapping):
        raise MalformedEvidence(f"{tee} evidence is not a JSON object")
    return evidence
