"""The ``az-tdx-vtpm`` verifier (Azure TDX confidential VMs): a numbered checklist.

The chain of trust: Intel's DCAP chain signs the TD quote; the quote's REPORTDATA binds the HCL
runtime data; the runtime data holds the vTPM's attestation key (AK); the AK signs the vTPM
quote; the quote carries the session's binding digest and the PCRs.

1. **Parse** the evidence (versions 0-2, ``evidence.py``), the HCL report (``hcl.py``), the
   TDREPORT it embeds (``tdreport.py``), the TD quote (the ``tdx`` verifier's parser: v4/v5,
   exact lengths, trailing zero padding) and the TPMS_ATTEST ->
   :class:`~custodes.errors.MalformedEvidence` and subclasses. The HCL report must embed a TD
   report.
2. **TD quote**: the ``tdx`` verifier's DCAP path (collateral current at the clock, PCK chain
   and CRLs, QE report, quote signature, TCB status; its error classes) when TDX collateral is
   configured; otherwise :class:`.errors.TdQuoteUnverified`: an unverified quote proves nothing.
   Its claims are upstream's (``quote``, ``td_attributes``, ``tcb_status``, ``advisory_ids``,
   the other QVL supplemental claims).
3. **HCL binding** (:class:`.errors.HclBindingMismatch`): the quote's REPORTDATA[0:32] ==
   SHA-256(var_data), as upstream; and, a custodes addition, the HCL's TDREPORT is the report
   that was quoted (same REPORTDATA, TEE TCB info and TD info), so the HCL report is not a
   splice of two reports.
4. - 7. **vTPM quote** (``vtpm.py``): AK signature, ``extraData`` == binding digest exactly (and
   the v2 ``user-data``), PCR digest, the event log (``cc_eventlog``) replayed to the PCRs
   when sent, init-data in PCR 8 (MRCONFIGID is not used on Azure).
8. **Claims**: the TD quote's claims, then ``tpm``, ``report_data`` (hex of the quote nonce) and
   ``init_data`` (hex of PCR 8) from the vTPM, as upstream.

The vectors have no collateral for their TD quote's platform, so the tests run step 2 only up
to the refusal and check steps 1 and 3-8 with :func:`verify_after_td_quote`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import ClassVar

import httpx

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.verifiers.azure.config import AzureVerifierConfig
from custodes.attestation.verifiers.azure.errors import (
    HclBindingMismatch,
    TdQuoteUnverified,
)
from custodes.attestation.verifiers.azure.evidence import AzTdxEvidence
from custodes.attestation.verifiers.azure.hcl import (
    HclReport,
    HwReportType,
    check_var_data_binding,
)
from custodes.attestation.verifiers.azure.tdreport import TdReport
from custodes.attestation.verifiers.azure.vtpm import verify_evidence_vtpm
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.attestation.verifiers.tdx import TdxQuote, TdxVerifier, httpx_fetcher
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.types.json import JsonObject
from custodes.types.tee import Tee


@dataclass(frozen=True, slots=True)
class ParsedAzTdx:
    """Step 1's output: everything decoded, nothing trusted yet."""

    evidence: AzTdxEvidence
    hcl: HclReport
    td_report: TdReport
    td_quote: TdxQuote
    attest: TpmsAttest

    @classmethod
    def from_json(cls, evidence: object) -> ParsedAzTdx:
        parsed = AzTdxEvidence.from_json(evidence)
        hcl = HclReport.embedding(parsed.hcl_report, HwReportType.TDX, "az-tdx-vtpm")
        return cls(
            evidence=parsed,
            hcl=hcl,
            td_report=TdReport.from_bytes(hcl.hw_report),
            td_quote=TdxQuote.from_bytes(parsed.td_quote),
            attest=TpmsAttest.from_bytes(parsed.tpm_quote.message),
        )


def check_td_binding(parsed: ParsedAzTdx) -> None:
    """Step 3: the TD quote binds the runtime data, and quotes the HCL's TDREPORT."""
    quote, report = parsed.td_quote.body, parsed.td_report
    check_var_data_binding(parsed.hcl, quote.report_data)
    pairs = (
        ("REPORTDATA", report.report_data, quote.report_data),
        ("TEE_TCB_SVN", report.tee_tcb_svn, quote.tcb_svn),
        ("MRSEAM", report.mr_seam, quote.mr_seam),
        ("MRSIGNERSEAM", report.mrsigner_seam, quote.mrsigner_seam),
        ("SEAMATTRIBUTES", report.seam_attributes, quote.seam_attributes),
        ("TDATTRIBUTES", report.td_attributes, quote.td_attributes),
        ("XFAM", report.xfam, quote.xfam),
        ("MRTD", report.mr_td, quote.mr_td),
        ("MRCONFIGID", report.mr_config_id, quote.mr_config_id),
        ("MROWNER", report.mr_owner, quote.mr_owner),
        ("MROWNERCONFIG", report.mr_owner_config, quote.mr_owner_config),
        *((f"RTMR{i}", report.rtmrs[i], quote.rtmrs[i]) for i in range(4)),
    )
    for name, in_hcl, quoted in pairs:
        if not hmac.compare_digest(in_hcl, quoted):
            raise HclBindingMismatch(f"the HCL's TDREPORT and the TD quote differ in {name}")


def verify_after_td_quote(
    parsed: ParsedAzTdx, request: VerificationRequest, td_claims: JsonObject
) -> JsonObject:
    """Steps 3 to 8, once step 2 has verified the TD quote and produced ``td_claims``."""
    check_td_binding(parsed)  # (3)
    vtpm = verify_evidence_vtpm(  # (4)-(7)
        parsed.evidence, parsed.hcl.runtime_data, parsed.attest, request
    )
    return td_claims | vtpm  # (8)


class AzTdxVtpmVerifier:
    """Verifies ``az-tdx-vtpm`` evidence; see the module docstring for the checklist."""

    tee: ClassVar[Tee] = Tee.AZ_TDX_VTPM

    def __init__(self, config: AzureVerifierConfig | None = None) -> None:
        self._config = config or AzureVerifierConfig()
        self._tdx = TdxVerifier(self._config.tdx_config()) if self._config.tdx_enabled else None

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        if request.tee is not Tee.AZ_TDX_VTPM:
            raise ValueError(f"the az-tdx-vtpm verifier cannot verify {request.tee} evidence")
        parsed = ParsedAzTdx.from_json(request.evidence)  # (1)
        td_claims = self.verify_td_quote(parsed)  # (2)
        return [VerifiedClaims(TeeClass.CPU, verify_after_td_quote(parsed, request, td_claims))]

    def verify_td_quote(self, parsed: ParsedAzTdx) -> JsonObject:
        """Step 2: DCAP-verify the TD quote with the ``tdx`` verifier; returns its claims."""
        if self._tdx is None:
            raise TdQuoteUnverified(
                "no TDX collateral is configured: the az-tdx-vtpm TD quote cannot be verified"
            )
        # The tdx verifier also compares REPORTDATA with pad64(digest). Azure's REPORTDATA is
        # not a session digest but the HCL binding, checked in step 3; so it is handed the
        # quote's own REPORTDATA here, and no init-data (Azure binds init-data in PCR 8).
        tdx_request = VerificationRequest(
            tee=Tee.TDX,
            evidence={"quote": b64std_encode(parsed.evidence.td_quote), "cc_eventlog": None},
            report_data=parsed.td_quote.report_data,
        )
        return self._tdx.verify(tdx_request)[0].claims


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> AzTdxVtpmVerifier:
    """The registry's factory: the TD quote's collateral as for the ``tdx`` verifier (the PCCS
    only with ``network``)."""
    pccs_url = settings.tdx_pccs_url if network else None
    return AzTdxVtpmVerifier(
        AzureVerifierConfig(
            clock=clock,
            tdx_collateral_path=settings.tdx_collateral,
            tdx_pccs_url=pccs_url,
            tdx_fetcher=httpx_fetcher(httpx.Client()) if pccs_url else None,
        )
    )
