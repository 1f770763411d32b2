"""The vTPM steps shared by both Azure verifiers (steps 4 to 7 and the ``tpm`` claims).

4. The quote is a TPM-generated quote (magic, type: ``tpm.errors.QuoteHeaderInvalid``) and its
   raw RSASSA-PKCS1-v1_5/SHA-256 signature verifies with the AK from the HCL runtime data
   (:class:`.errors.QuoteSignatureInvalid`). The AK is trusted because the runtime data is bound
   to the hardware report (step 3), unlike the plain ``tpm`` TEE.
5. ``extraData`` equals the binding digest exactly: no padding, no truncation
   (:class:`.errors.QuoteNonceMismatch`). Evidence version 2 also carries the digest in the HCL
   runtime data's ``user-data`` (hex), whose bytes must start with it
   (:class:`.errors.UserDataMismatch`); that puts the digest under the hardware signature too.
6. The quote selects SHA-256 PCRs only and its PCR digest is SHA-256 of the selected PCR values
   (``tpm.errors.PcrSelectionUnsupported`` / ``PcrDigestMismatch``, the ``tpm`` verifier's
   check). Azure's guest quotes all 24 PCRs, so this is upstream's digest over all of them.
   6b. With an event log (``cc_eventlog``, evidence versions 1 and 2): it replays to the quoted
   PCRs (``eventlog.py``; :class:`.errors.EventLogReplayMismatch`, ``MalformedEvidence``).
7. Init-data, when a digest is given: PCR 8 == SHA-256(32 zero bytes || digest), with a 32-byte
   (sha256) digest only (:class:`~custodes.errors.InitDataMismatch`; the ``tpm`` verifier's
   check; upstream panics on other sizes).

Claims (upstream's ``extend_claim``): ``tpm`` = ``{"pcr00": hex, ...}`` for the quoted PCRs,
``report_data`` = hex of ``extraData``, ``init_data`` = hex of PCR 8 (when quoted), and with
an event log ``uefi_event_logs`` (its entries, AAEL ones decoded, as the TDX claims name them).
"""

from __future__ import annotations

import hmac
import re
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from custodes.attestation.verifiers.azure.errors import (
    QuoteNonceMismatch,
    QuoteSignatureInvalid,
    UserDataMismatch,
)
from custodes.attestation.verifiers.azure.eventlog import replay_eventlog
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence, AzTdxEvidence, VtpmQuote
from custodes.attestation.verifiers.azure.hcl import RuntimeData
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tpm.structures import TpmsAttest, TpmsQuoteInfo
from custodes.attestation.verifiers.tpm.verifier import (
    INIT_DATA_PCR,
    check_header,
    check_init_data,
    check_pcrs,
    pcr_claims,
)
from custodes.types.json import JsonObject

USER_DATA_VERSION: Final = 2  # the first evidence version that binds the digest in user-data
_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")


def check_quote_signature(
    ak: rsa.RSAPublicKey, quote: VtpmQuote, attest: TpmsAttest
) -> TpmsQuoteInfo:
    """Step 4: a TPM-generated quote, signed by the AK; returns the quote info."""
    info = check_header(attest)
    try:
        ak.verify(quote.signature, quote.message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as e:
        raise QuoteSignatureInvalid("the vTPM quote is not signed by the HCL's AK") from e
    return info


def check_nonce(attest: TpmsAttest, report_data: bytes) -> None:
    """Step 5: ``extraData`` is the binding digest, byte for byte."""
    if not report_data:
        raise QuoteNonceMismatch("empty binding digest")
    if not hmac.compare_digest(attest.extra_data, report_data):
        raise QuoteNonceMismatch("the vTPM quote's extraData is not the binding digest")


def check_user_data(runtime: RuntimeData, report_data: bytes) -> None:
    """Step 5, evidence version 2: the HCL ``user-data`` bytes start with the digest."""
    text = runtime.user_data
    if text is None:
        raise UserDataMismatch("version 2 evidence without 'user-data' in the HCL runtime data")
    if not _HEX.fullmatch(text):
        raise UserDataMismatch("the HCL 'user-data' is not hex")
    user_data = bytes.fromhex(text)
    if not report_data or len(user_data) < len(report_data):
        raise UserDataMismatch("the HCL 'user-data' cannot hold the binding digest")
    if not hmac.compare_digest(user_data[: len(report_data)], report_data):
        raise UserDataMismatch("the HCL 'user-data' does not start with the binding digest")


def vtpm_claims(quote: VtpmQuote, attest: TpmsAttest, selected: tuple[int, ...]) -> JsonObject:
    """Upstream's vTPM claims, for the quoted PCRs only (the others are not signed)."""
    claims: JsonObject = {
        "tpm": pcr_claims(quote.pcrs, selected),
        "report_data": attest.extra_data.hex(),
    }
    if INIT_DATA_PCR in selected:
        claims["init_data"] = quote.pcrs[INIT_DATA_PCR].hex()
    return claims


def verify_vtpm(
    *,
    version: int,
    runtime: RuntimeData,
    quote: VtpmQuote,
    attest: TpmsAttest,
    report_data: bytes,
    init_data_digest: bytes | None,
    eventlog: bytes | None = None,
) -> JsonObject:
    """Steps 4 to 7 in order; returns the vTPM claims. ``runtime`` must already be bound to
    a verified hardware report (steps 2 and 3)."""
    info = check_quote_signature(runtime.ak_public, quote, attest)  # (4)
    check_nonce(attest, report_data)  # (5)
    if version >= USER_DATA_VERSION:
        check_user_data(runtime, report_data)
    selected = check_pcrs(info, quote.pcrs)  # (6)
    log = replay_eventlog(eventlog, quote.pcrs, selected) if eventlog is not None else None  # (6b)
    check_init_data(init_data_digest, quote.pcrs, selected)  # (7)
    claims = vtpm_claims(quote, attest, selected)
    if log is not None:
        claims["uefi_event_logs"] = log.to_json()
    return claims


def verify_evidence_vtpm(
    evidence: AzSnpEvidence | AzTdxEvidence,
    runtime: RuntimeData,
    attest: TpmsAttest,
    request: VerificationRequest,
) -> JsonObject:
    """Steps 4 to 7 of either Azure verifier: :func:`verify_vtpm` over the evidence's quote and
    event log, the HCL's (already bound) runtime data and the session's binding."""
    return verify_vtpm(
        version=evidence.version,
        runtime=runtime,
        quote=evidence.tpm_quote,
        attest=attest,
        report_data=request.report_data,
        init_data_digest=request.init_data_digest,
        eventlog=evidence.cc_eventlog,
    )
