"""Azure confidential VMs: ``az-snp-vtpm`` (SEV-SNP) and ``az-tdx-vtpm`` (TDX).

On Azure the guest cannot ask the hardware for a report itself: the paravisor (HCL) does, and
stores it with a JSON "runtime data" document in the vTPM (``hcl.py``). The guest sends the HCL
report, a vTPM quote over its PCRs with the binding digest as nonce, and the VCEK (SNP) or a TD
quote (TDX) (``evidence.py``). The checklists are in ``snp_verifier.py`` and
``tdx_verifier.py``; the vTPM steps they share are in ``vtpm.py``.
"""

from __future__ import annotations

from custodes.attestation.verifiers.azure.config import AzureVerifierConfig
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence, AzTdxEvidence, VtpmQuote
from custodes.attestation.verifiers.azure.hcl import HclReport, HwReportType, RuntimeData
from custodes.attestation.verifiers.azure.snp_verifier import AzSnpVtpmVerifier
from custodes.attestation.verifiers.azure.tdreport import TdReport
from custodes.attestation.verifiers.azure.tdx_verifier import AzTdxVtpmVerifier

__all__ = [
    "AzSnpEvidence",
    "AzSnpVtpmVerifier",
    "AzTdxEvidence",
    "AzTdxVtpmVerifier",
    "AzureVerifierConfig",
    "HclReport",
    "HwReportType",
    "RuntimeData",
    "TdReport",
    "VtpmQuote",
]
