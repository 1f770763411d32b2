"""The ``az-snp-vtpm`` verifier (Azure SEV-SNP confidential VMs): a numbered checklist.

The chain of trust: AMD ARK -> ASK -> VCEK signs the SNP report; the report's REPORT_DATA
binds the HCL runtime data; the runtime data holds the vTPM's attestation key (AK); the AK
signs the vTPM quote; the quote carries the session's binding digest and the PCRs.

1. **Parse** the evidence (versions 0-2, ``evidence.py``), the HCL report (``hcl.py``: exact
   lengths, runtime data JSON, AK JWK), the embedded SNP report (1184 bytes) and the quote's
   TPMS_ATTEST -> :class:`~custodes.errors.MalformedEvidence` (subclasses
   :class:`.errors.EvidenceVersionUnsupported`, :class:`.errors.HclReportInvalid`). The HCL
   report must embed an SNP report.
2. **SNP report** (``snp.errors``), with the ``snp`` verifier's parts (pinned AMD roots and
   chain checks of ``snp/certs.py``, ``check_tcb``): (a) version 3..5
   (``ReportVersionUnsupported``); (b) ECDSA P-384 by a VCEK (``SignatureAlgorithmUnsupported``;
   the evidence carries a VCEK, never a VLEK); (c) VMPL 0, where the HCL runs
   (``VmplNotZero``); (d) the generation from CPUID (``ProcessorUnsupported``) and ARK -> ASK ->
   VCEK under the pinned roots and the clock (``VekChainInvalid``); (e) the VCEK's hwID is the
   CHIP_ID (``HwIdMismatch``) and its SPLs are REPORTED_TCB (``TcbMismatch``); (f) the report
   signature (``ReportSignatureInvalid``). Upstream accepts Milan only; every generation with
   pinned roots is accepted here.
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
against the clock), the VCEK's ``VekInfo`` per verified VEK (:data:`MAX_CACHED_VEK_INFOS`), and
the AK's RSA key per JWK (``hcl.py``). Reports, runtime data and quotes are never cached.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custodes._internal.b64 import b64std_encode
from custodes._internal.bounded_cache import BoundedCache
from custodes.attestation.verifiers.azure.config import AzureVerifierConfig
from custodes.attestation.verifiers.azure.errors import HclReportInvalid
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence
from custodes.attestation.verifiers.azure.hcl import (
    HclReport,
    HwReportType,
    check_var_data_binding,
)
from custodes.attestation.verifiers.azure.vtpm import verify_vtpm
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.snp.certs import (
    TURIN_HWID_SIZE,
    AmdRoots,
    ChainVerifier,
    VekInfo,
    VerifiedVek,
    pinned_roots,
)
from custodes.attestation.verifiers.snp.errors import (
    HwIdMismatch,
    ProcessorUnsupported,
    ReportSignatureInvalid,
    ReportVersionUnsupported,
    SignatureAlgorithmUnsupported,
    VmplNotZero,
)
from custodes.attestation.verifiers.snp.report import ECDSA_P384_SHA384, SigningKey, SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.attestation.verifiers.snp.verifier import (
    MAX_REPORT_VERSION,
    MIN_REPORT_VERSION,
    check_tcb,
    snp_claims,
)
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

HCL_VMPL: Final = 0
MAX_CACHED_VEK_INFOS: Final = 1024

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
        hcl = HclReport.from_bytes(parsed.hcl_report)
        if hcl.report_type is not HwReportType.SNP:
            raise HclReportInvalid(f"az-snp-vtpm evidence with a {hcl.report_type.name} report")
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
        # VekInfo per verified VEK, as the snp verifier keeps it: keyed by the identity of the
        # VerifiedVek that the chain cache returns for the same DER (the entry holds it, so its
        # id cannot be reused while the entry lives). The chain check, with its validity
        # windows against the clock, still runs on every call.
        self._infos: BoundedCache[int, tuple[VerifiedVek, VekInfo]] = BoundedCache(
            MAX_CACHED_VEK_INFOS
        )

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        if request.tee is not Tee.AZ_SNP_VTPM:
            raise ValueError(f"the az-snp-vtpm verifier cannot verify {request.tee} evidence")
        parsed = ParsedAzSnp.from_json(request.evidence)  # (1)
        report = parsed.snp_report
        self.check_snp_report(report, parsed.evidence.vcek)  # (2)
        check_var_data_binding(parsed.hcl, report.report_data)  # (3)
        vtpm = verify_vtpm(  # (4)-(7)
            version=parsed.evidence.version,
            runtime=parsed.hcl.runtime_data,
            quote=parsed.evidence.tpm_quote,
            attest=parsed.attest,
            report_data=request.report_data,
            init_data_digest=request.init_data_digest,
            eventlog=parsed.evidence.cc_eventlog,
        )
        return [VerifiedClaims(TeeClass.CPU, az_snp_claims(report) | vtpm)]  # (8)

    def check_snp_report(self, report: SnpReport, vcek_der: bytes) -> None:
        """Step 2: the SNP report is genuine, from VMPL 0, signed by this chip's VCEK."""
        if not MIN_REPORT_VERSION <= report.version <= MAX_REPORT_VERSION:  # (2a)
            raise ReportVersionUnsupported(
                f"SNP report version {report.version} is not within "
                f"{MIN_REPORT_VERSION}..{MAX_REPORT_VERSION}"
            )
        if report.signature_algo != ECDSA_P384_SHA384:  # (2b)
            raise SignatureAlgorithmUnsupported(
                f"SIGNATURE_ALGO {report.signature_algo} is not ECDSA P-384 with SHA-384"
            )
        if report.key_info.signing_key != SigningKey.VCEK:
            raise SignatureAlgorithmUnsupported(
                f"SIGNING_KEY {report.key_info.signing_key}: Azure evidence carries a VCEK"
            )
        if report.vmpl != HCL_VMPL:  # (2c)
            raise VmplNotZero(f"the report comes from VMPL {report.vmpl}, not VMPL 0")
        generation = self._generation(report, vcek_der)  # (2d)
        vek = self._chains.verify(
            vcek_der, SigningKey.VCEK, generation, now=self._config.clock.now()
        )
        info = self._vek_info(vek)  # (2e)
        _check_hwid(info, report, generation)
        check_tcb(info, report, generation)
        _check_signature(report, vek)  # (2f)

    def _vek_info(self, vek: VerifiedVek) -> VekInfo:
        cached = self._infos.get(id(vek))
        if cached is not None and cached[0] is vek:
            return cached[1]
        info = VekInfo.from_certificate(vek.certificate)
        self._infos.put(id(vek), (vek, info))
        return info

    def _generation(self, report: SnpReport, vcek_der: bytes) -> Generation:
        generation = report.generation
        if generation is not None:
            return generation
        if report.cpuid_known:
            raise ProcessorUnsupported(
                f"CPUID family {report.cpuid_fam_id:#x} model {report.cpuid_mod_id:#x} "
                "is not Milan, Genoa or Turin"
            )
        # CPUID zeroed by the firmware: the VCEK's issuer names the generation, and the chain
        # must then verify under that generation's pinned roots.
        candidates = self._chains.generations_for(vcek_der, SigningKey.VCEK)
        if not candidates:
            raise ProcessorUnsupported("no pinned ASK issued the evidence's VCEK")
        return candidates[0]


def _check_hwid(info: VekInfo, report: SnpReport, generation: Generation) -> None:
    if info.hwid is None:
        raise HwIdMismatch("the VCEK has no hwID extension")
    if len(info.hwid) == TURIN_HWID_SIZE and generation is Generation.TURIN:
        expected = report.chip_id[:TURIN_HWID_SIZE]
    else:
        expected = report.chip_id
    if not hmac.compare_digest(info.hwid, expected):
        raise HwIdMismatch("the VCEK was issued for another chip (hwID != CHIP_ID)")


def _check_signature(report: SnpReport, vek: VerifiedVek) -> None:
    r, s = report.signature_ints
    try:
        vek.public_key.verify(
            encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature as e:
        raise ReportSignatureInvalid("the SNP report is not signed by this VCEK") from e
