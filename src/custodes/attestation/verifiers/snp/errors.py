"""The SEV-SNP verifier's errors: one class per checklist step (see ``verifier.py``).

Parsing failures raise :class:`custodes.errors.MalformedEvidence` itself.
"""

from __future__ import annotations

from custodes.errors import (
    BindingMismatch,
    ChainInvalid,
    CollateralError,
    InitDataMismatch,
    SignatureInvalid,
    TcbError,
    VerificationError,
)


class ReportVersionUnsupported(VerificationError, step="report-version"):
    """Step 2: the report version is outside 3..5 (v2 lacks the CPUID fields)."""

    code = "snp-report-version"


class SignatureAlgorithmUnsupported(VerificationError, step="signature-algorithm"):
    """Step 3: the report is not signed with ECDSA P-384/SHA-384 by a VCEK or VLEK."""

    code = "snp-signature-algorithm"


class VmplNotZero(VerificationError, step="vmpl"):
    """Step 4: the report was requested from a VMPL other than 0."""

    code = "snp-vmpl"


class ProcessorUnsupported(VerificationError, step="processor"):
    """Step 5: the CPUID family/model is not a known SNP generation (Milan, Genoa, Turin)."""

    code = "snp-processor"


class VekUnavailable(CollateralError, step="vcek"):
    """Step 5: no VCEK/VLEK in the evidence, the offline store, or from AMD's KDS."""

    code = "snp-vek-unavailable"


class VekChainInvalid(ChainInvalid):
    """Step 5: ARK -> ASK/ASVK -> VCEK/VLEK does not verify (signature, algorithm, dates)."""

    code = "snp-vek-chain"


class VekExtensionInvalid(ChainInvalid, step="vcek-extensions"):
    """Step 6: an AMD extension of the VCEK/VLEK (hwID, TCB SPLs) is missing or malformed."""

    code = "snp-vek-extension"


class HwIdMismatch(VerificationError, step="vcek-extensions"):
    """Step 6: the VCEK's hwID extension is not the report's CHIP_ID."""

    code = "snp-hwid-mismatch"


class TcbMismatch(TcbError, step="vcek-extensions"):
    """Step 6: the VCEK/VLEK's TCB extensions are not the report's REPORTED_TCB."""

    code = "snp-tcb-mismatch"


class ReportSignatureInvalid(SignatureInvalid):
    """Step 7: the report signature does not verify with the VCEK/VLEK key."""

    code = "snp-report-signature"


class ReportDataMismatch(BindingMismatch):
    """Step 8: REPORT_DATA is not the binding digest followed by zero bytes."""

    code = "snp-report-data"


class HostDataMismatch(InitDataMismatch):
    """Step 9: HOST_DATA is not the init-data digest (or the digest cannot fit 32 bytes)."""

    code = "snp-host-data"
