"""The ``az-snp-vtpm`` verifier (Azure SEV-SNP confidential VMs): a numbered checklist.

The chain of trust: AMD ARK -> ASK -> VCEK signs the SNP report; the report's REPORT_DATA
binds the HCL runtime data; the runtime data holds the vTPM's attestation key (AK); the AK
signs the vTPM quote; the quote carries the session's binding digest and the PCRs.

1. **Parse** the evidence (versions 0-2, ``evidence.py``), the HCL report (``hcl.py``: exact
   lengths, runtime data JSON, AK JWK), the embedded SNP report (1184 bytes) and the quote's
   TPMS_ATTEST -> :class:`~custodes.errors.MalformedEvidence` (subclasses
   :class:`.errors.EvidenceVersionUnsupported`, :class:`.errors.HclReportInvalid`). The HCL
   report must embed an SNP report.
2. **SNP report** (``snp.errors``), with the ``snp`` verifier's report checks (``snp/checks.py``)
   and its pinned AMD roots and chain checks (``snp/certs.py``): (a) version 3..5
   (``ReportVersionUnsupported``); (b) ECDSA P-384 by a VCEK (``SignatureAlgorithmUnsupported``; the
   evidence carries a VCEK, never a VLEK); (c) VMPL 0, where the HCL runs (``VmplNotZero``); (d) the
   generation from CPUID (``ProcessorUnsupported``) and ARK -> ASK -> VCEK under the pinned roots
   and the clock (``VekChainInvalid``); (e) the VCEK's hwID is the CHIP_ID (``HwIdMismatch``) and
   its SPLs are REPORTED_TCB (``TcbMismatch``); (f) the report signature
   (``ReportSignatureInvalid``). Upstream accepts Milan only; every generation with pinned roots is
   accepted here.
3. **HCL binding**: REPORT_DATA[0:32] == SHA-256(var_data) -> :class:`.errors.HclBindingMismatch`.
4. - 7. **vTPM quote** (``vtpm.py``): AK signature, ``extraData`` == binding digest exactly (and
   the v2 ``user-data``), PCR digest, the event log (``cc_eventlog``) replayed to the PCRs
   when sent, init-data in PCR 8.
8. **Claims** with upstream's names and upstream's **string** values (``parse_tee_evidence_az``:
   ``"3"``, ``"true"``): ``policy_abi_major``, ``policy_abi_minor``, ``policy_smt_allowed``,
   ``policy_migrate_ma``, ``policy_debug_allowed``, ``policy_single_socket``,
   ``reported_tcb_bootloader``/``_tee``/``_snp``/``_microcode`` (and ``_fmc`` on Turin, a
   custodes addition), ``platform_tsme_enabled``, ``platform_smt_enabled``, ``measurement``
   (standard **base64**, as upstream, unlike the ``snp`` TEE's hex), then the vTPM's ``tpm``,
   ``report_data`` (hex of the quote nonce) and ``init_data`` (hex of PCR 8), as upstream's
   ``default_cpu`` az-snp-vtpm rules read them.

**Caches** (a chip's VCEK and a VM's AK do not change between reports; every step still runs
on every call): the ``snp`` chain cache (verified VEK per DER, validity windows re-checked
against the clock), the VCEK's ``VekInfo`` per verified VEK (``snp/checks.py``), and
the AK's RSA key per JWK (``hcl.py``). Reports, runtime data and quotes are never cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.verifiers.azure.config import AzureVerifierConfig
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence
from custodes.attestation.verifiers.azure.hcl import (
    HclReport,
    HwReportType,
    check_var_data_binding,
)
from custodes.attestation.verifiers.azure.vtpm import verify_evidence_vtpm
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.attestation.verifiers.snp.certs import AmdRoots, ChainVerifier, pinned_roots
from custodes.attestation.verifiers.snp.checks import (
    VekExtensionCheck,
    check_report_signature,
    check_signature_algorithm,
    check_version,
    check_vmpl,
    issuer_generation,
    report_generation,
)
from custodes.attestation.verifiers.snp.report import SigningKey, SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.attestation.verifiers.snp.verifier import snp_claims
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

# The evidence carries a VCEK, never a VLEK.
AZURE_VEK: Final = (SigningKey.VCEK,)

# snp_claims names that upstream's az-snp-vtpm verifier reports, as strings.
_STRING_CLAIMS: Final = (
    "policy_abi_major",
    "policy_abi_minor",
    "policy_smt_allowed",
    "policy_migrate_ma",
    "policy_debug_allowed",
    "policy_single_socket",
    "reported_tcb_bootloader",
    "reported_tcb_tee",
    "reported_tcb_snp",
    "reported_tcb_microcode",
    "reported_tcb_fmc",
    "platform_tsme_enabled",
    "platform_smt_enabled",
)


@dataclass(frozen=True, slots=True)
class ParsedAzSnp:
    """Step 1's output: everything decoded, nothing trusted yet."""

    evidence: AzSnpEvidence
    hcl: HclReport
    snp_report: SnpReport
    attest: TpmsAttest

    @classmethod
    def from_json(cls, evidence: object) -> ParsedAzSnp:
        parsed = AzSnpEvidence.from_json(evidence)
        hcl = HclReport.embedding(parsed.hcl_report, HwReportType.SNP, "az-snp-vtpm")
        return cls(
            evidence=parsed,
            hcl=hcl,
            snp_report=SnpReport.from_bytes(hcl.hw_report),
            attest=TpmsAttest.from_bytes(parsed.tpm_quote.message),
        )


def _text(value: object) -> str:
    # Rust's Display: booleans in lower case.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def az_snp_claims(report: SnpReport) -> JsonObject:
    """Step 8, SNP part: upstream's ``parse_tee_evidence_az`` names and string values."""
    base = snp_claims(report)
    claims: JsonObject = {name: _text(base[name]) for name in _STRING_CLAIMS if name in base}
    claims["measurement"] = b64std_encode(report.measurement)
    return claims


class AzSnpVtpmVerifier:
    """Verifies ``az-snp-vtpm`` evidence; see the module docstring for the checklist."""

    tee: ClassVar[Tee] = Tee.AZ_SNP_VTPM

    def __init__(
        self,
        config: AzureVerifierConfig | None = None,
        *,
        roots: Mapping[Generation, AmdRoots] | None = None,
    ) -> None:
        """``roots`` replaces the pinned AMD roots (tests with a synthetic PKI only)."""
        self._config = config or AzureVerifierConfig()
        self._chains = ChainVerifier(pinned_roots() if roots is None else roots)
        # The chain check, with its validity windows against the clock, runs on every call.
        self._vek_extensions = VekExtensionCheck()

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        if request.tee is not Tee.AZ_SNP_VTPM:
            raise ValueError(f"the az-snp-vtpm verifier cannot verify {request.tee} evidence")
        parsed = ParsedAzSnp.from_json(request.evidence)  # (1)
        report = parsed.snp_report
        self.check_snp_report(report, parsed.evidence.vcek)  # (2)
        check_var_data_binding(parsed.hcl, report.report_data)  # (3)
        vtpm = verify_evidence_vtpm(  # (4)-(7)
            parsed.evidence, parsed.hcl.runtime_data, parsed.attest, request
        )
        return [VerifiedClaims(TeeClass.CPU, az_snp_claims(report) | vtpm)]  # (8)

    def check_snp_report(self, report: SnpReport, vcek_der: bytes) -> None:
        """Step 2: the SNP report is genuine, from VMPL 0, signed by this chip's VCEK (the
        ``snp`` verifier's report checks, ``snp/checks.py``)."""
        check_version(report)  # (2a)
        check_signature_algorithm(report, AZURE_VEK)  # (2b)
        check_vmpl(report)  # (2c): where the HCL runs
        generation = report_generation(report)  # (2d)
        if generation is None:
            # CPUID zeroed by the firmware: the VCEK's issuer names the generation, and the
            # chain must then verify under that generation's pinned roots.
            generation = issuer_generation(self._chains, vcek_der, SigningKey.VCEK)
        vek = self._chains.verify(
            vcek_der, SigningKey.VCEK, generation, now=self._config.clock.now()
        )
        self._vek_extensions.check(report, vek)  # (2e)
        check_report_signature(report, vek)  # (2f)


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> AzSnpVtpmVerifier:
    """The registry's factory: the evidence carries its VCEK, so only the clock is needed."""
    return AzSnpVtpmVerifier(AzureVerifierConfig(clock=clock))
