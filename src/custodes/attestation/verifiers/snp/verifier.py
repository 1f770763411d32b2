"""The AMD SEV-SNP verifier: a numbered checklist, one error class per step.

(1) parse the evidence (evidence.py, report.py): MalformedEvidence.
Steps 2-7 are the report checks shared with the az-snp-vtpm verifier (checks.py).
(2) report version within 3..5: ReportVersionUnsupported.
(3) SIGNATURE_ALGO is ECDSA P-384/SHA-384 and SIGNING_KEY is VCEK or VLEK:
    SignatureAlgorithmUnsupported.
(4) VMPL is 0: VmplNotZero.
(5) generation from CPUID (ProcessorUnsupported); the VEK from the evidence, else the offline
    store, else KDS (VekUnavailable); ARK -> ASK/ASVK -> VEK under the pinned roots and the
    clock (VekChainInvalid). A v3+ report whose CPUID bytes are zero gets the generation
    whose pinned ASK/ASVK issued the evidence's VEK (the chain must then verify); it cannot
    use the store or KDS, whose paths name the product.
(6) VEK extensions (VekExtensionInvalid): hwID == CHIP_ID for a VCEK (HwIdMismatch); SPLs ==
    REPORTED_TCB, fmc too on Turin (TcbMismatch).
(7) report signature over bytes [0, 0x2A0) with the VEK key: ReportSignatureInvalid.
(8) REPORT_DATA == report_data followed by zeros to 64 bytes, never truncated:
    ReportDataMismatch.
(9) HOST_DATA == the init-data digest (exactly 32 bytes) when one is given: HostDataMismatch.
(10) claims with upstream's names (trustee ``parse_tee_evidence``).

Differences from upstream, on purpose: a report-data digest longer than 64 bytes is refused
(upstream truncates); an init-data digest must be exactly 32 bytes (sha256) because HOST_DATA
holds 32 bytes (upstream truncates a sha384/sha512 digest to its first 32 bytes, which would
bind only part of it); the validity windows of the ARK, ASK/ASVK and VEK are checked against
the injected clock.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final

import httpx

from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.attestation.verifiers.snp.certs import (
    AmdRoots,
    ChainVerifier,
    VerifiedVek,
    pinned_roots,
)
from custodes.attestation.verifiers.snp.checks import (
    VekExtensionCheck,
    check_report_signature,
    check_signature_algorithm,
    check_version,
    check_vmpl,
    issuer_generation,
    report_generation,
)
from custodes.attestation.verifiers.snp.collateral import (
    KDS_BASE_URL,
    Fetcher,
    VcekSources,
    httpx_fetcher,
)
from custodes.attestation.verifiers.snp.errors import (
    HostDataMismatch,
    ReportDataMismatch,
    VekUnavailable,
)
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.snp.report import SigningKey, SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

REPORT_DATA_SIZE: Final = 64
HOST_DATA_SIZE: Final = 32


@dataclass(frozen=True, slots=True)
class SnpVerifierConfig:
    """Where VCEKs come from when the evidence lacks one, and the clock for validity windows.

    ``kds_fetcher`` is called with a KDS URL and returns the DER body (raise on failure); with
    ``None`` KDS is never contacted. ``vcek_store_dir`` uses upstream's OfflineStore layout
    (see ``collateral.py``).
    """

    vcek_store_dir: Path | None = None
    kds_fetcher: Fetcher | None = None
    clock: Clock = field(default_factory=SystemClock)
    kds_base_url: str = KDS_BASE_URL


class SnpVerifier:
    """Verifies ``snp`` evidence; see the module docstring for the checklist."""

    tee: ClassVar[Tee] = Tee.SNP

    def __init__(
        self,
        config: SnpVerifierConfig | None = None,
        *,
        roots: Mapping[Generation, AmdRoots] | None = None,
    ) -> None:
        """``roots`` replaces the pinned AMD roots (tests with a synthetic PKI only)."""
        self._config = config or SnpVerifierConfig()
        self._chains = ChainVerifier(pinned_roots() if roots is None else roots)
        self._sources = VcekSources(
            self._config.vcek_store_dir, self._config.kds_fetcher, self._config.kds_base_url
        )
        self._vek_extensions = VekExtensionCheck()

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        if request.tee is not Tee.SNP:
            raise ValueError(f"the SNP verifier cannot verify {request.tee} evidence")
        evidence = SnpEvidence.from_json(request.evidence)  # (1)
        report = evidence.report
        check_version(report)  # (2)
        kind = check_signature_algorithm(report)  # (3)
        check_vmpl(report)  # (4)
        vek = self._verified_vek(evidence, kind)  # (5)
        self._vek_extensions.check(report, vek)  # (6)
        check_report_signature(report, vek)  # (7)
        _check_report_data(report, request.report_data)  # (8)
        _check_host_data(report, request.init_data_digest)  # (9)
        return [VerifiedClaims(TeeClass.CPU, snp_claims(report))]  # (10)

    # (5) ------------------------------------------------------------------------------
    def _verified_vek(self, evidence: SnpEvidence, kind: SigningKey) -> VerifiedVek:
        report = evidence.report
        now = self._config.clock.now()
        generation = report_generation(report)
        provided = evidence.entries(kind.name)
        if len(provided) > 1:
            raise MalformedEvidence(f"the evidence carries {len(provided)} {kind.name}s, not one")
        arks = evidence.entries("ARK")
        intermediates = evidence.entries("ASK") + evidence.entries("ASVK")
        if provided:
            vek_der = provided[0]
            if generation is None:
                # A report without CPUID (zeroed by firmware): the VEK's issuer names its
                # generation; the chain check below still has to pass for it.
                generation = issuer_generation(self._chains, vek_der, kind)
        elif kind is SigningKey.VLEK:
            raise VekUnavailable("a VLEK-signed report must carry its VLEK in cert_chain")
        elif generation is None:
            raise VekUnavailable("without CPUID in the report the KDS product is unknown")
        else:
            vek_der, source = self._sources.find(generation, report.chip_id, report.reported_tcb)
            logger.debug("SNP VCEK source: %s", source)
        return self._chains.verify(
            vek_der,
            kind,
            generation,
            now=now,
            provided_arks=arks,
            provided_intermediates=intermediates,
        )


def _check_report_data(report: SnpReport, expected: bytes) -> None:
    if len(expected) > REPORT_DATA_SIZE:
        raise ReportDataMismatch(
            f"a {len(expected)}-byte binding digest cannot fit the 64-byte REPORT_DATA"
        )
    padded = expected + bytes(REPORT_DATA_SIZE - len(expected))
    if not hmac.compare_digest(padded, report.report_data):
        raise ReportDataMismatch("REPORT_DATA is not this session's binding digest")


def _check_host_data(report: SnpReport, digest: bytes | None) -> None:
    if digest is None:
        return  # no init-data: HOST_DATA is reported in the claims, not checked
    if len(digest) != HOST_DATA_SIZE:
        raise HostDataMismatch(
            f"a {len(digest)}-byte init-data digest cannot be bound by SNP HOST_DATA, which "
            'holds 32 bytes: use algorithm = "sha256" in the init-data (custodes does not '
            "truncate digests)"
        )
    if not hmac.compare_digest(digest, report.host_data):
        raise HostDataMismatch("HOST_DATA is not the init-data digest")


def snp_claims(report: SnpReport) -> JsonObject:
    """Upstream's claim names and types for ``snp`` (what ``default_cpu`` policy reads)."""
    policy, tcb, platform = report.policy, report.reported_tcb, report.platform_info
    claims: JsonObject = {
        "policy_abi_major": policy.abi_major,
        "policy_abi_minor": policy.abi_minor,
        "policy_smt_allowed": policy.smt_allowed,
        "policy_migrate_ma": policy.migrate_ma,
        "policy_debug_allowed": policy.debug_allowed,
        "policy_single_socket": policy.single_socket,
        "reported_tcb_bootloader": tcb.bootloader,
        "reported_tcb_tee": tcb.tee,
        "reported_tcb_snp": tcb.snp,
        "reported_tcb_microcode": tcb.microcode,
        "platform_tsme_enabled": platform.tsme_enabled,
        "platform_smt_enabled": platform.smt_enabled,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "init_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
    }
    if tcb.fmc is not None:
        claims["reported_tcb_fmc"] = tcb.fmc  # Turin only; custodes addition
    return claims


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> SnpVerifier:
    """The registry's factory: the offline VCEK store, and AMD KDS only with ``network`` and a
    configured ``snp_kds_url``."""
    if network and settings.snp_kds_url:
        return SnpVerifier(
            SnpVerifierConfig(
                vcek_store_dir=settings.snp_vcek_store_dir,
                kds_fetcher=httpx_fetcher(httpx.Client()),
                kds_base_url=settings.snp_kds_url,
                clock=clock,
            )
        )
    return SnpVerifier(SnpVerifierConfig(vcek_store_dir=settings.snp_vcek_store_dir, clock=clock))
