"""Errors of the Azure confidential-VM verifiers (``az-snp-vtpm``, ``az-tdx-vtpm``).

One class per checklist step that has no shared class (see ``snp_verifier.py`` and
``tdx_verifier.py`` for the checklists). Steps that reuse another verifier's checks raise that
verifier's classes: the SNP report checks raise ``snp.errors``, the TD quote's DCAP check raises
the ``tdx`` verifier's classes, the vTPM quote header and PCR checks raise ``tpm.errors``, and
the init-data check raises :class:`~custodes.errors.InitDataMismatch`.
"""

from __future__ import annotations

from custodes.errors import (
    BindingMismatch,
    CollateralError,
    MalformedEvidence,
    SignatureInvalid,
    VerificationError,
)


class EvidenceVersionUnsupported(MalformedEvidence):
    """Step 1: the evidence's ``version`` is not 1 or 2 (version 0 has no ``version``)."""

    code = "az-evidence-version"


class HclReportInvalid(MalformedEvidence):
    """Step 1: the HCL report, its runtime data JSON or the AK JWK in it is malformed."""

    code = "az-hcl-report"


class TdQuoteUnverified(CollateralError):
    """Step 2 (az-tdx-vtpm): no TDX collateral is configured, so the TD quote cannot be
    verified and nothing in the evidence can be trusted."""

    code = "az-tdx-no-collateral"


# Its own step, not the session binding: the hardware report does not bind the HCL's runtime data.
class HclBindingMismatch(BindingMismatch, step="hcl-binding"):
    """Step 3: the hardware report does not bind this HCL report (report_data[0:32] is not
    SHA-256 of the runtime data; for TDX also: the HCL's TD report is not the quoted one)."""

    code = "az-hcl-binding"


class QuoteSignatureInvalid(SignatureInvalid):
    """Step 4: the vTPM quote is not signed by the AK from the HCL runtime data."""

    code = "az-vtpm-quote-signature"


class QuoteNonceMismatch(BindingMismatch):
    """Step 5: the vTPM quote's ``extraData`` is not exactly the binding digest."""

    code = "az-vtpm-nonce"


class UserDataMismatch(BindingMismatch):
    """Step 5 (evidence version 2): the HCL runtime data's ``user-data`` does not start with
    the binding digest."""

    code = "az-hcl-user-data"


class EventLogReplayMismatch(VerificationError):
    """Step 6b: the evidence's event log (``cc_eventlog``: AA event-log entries, TCG format)
    does not replay to the quoted PCRs, or extends a PCR the quote does not cover."""

    code = "az-vtpm-eventlog-replay"
