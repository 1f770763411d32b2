"""The SEV-SNP report checks shared by the ``snp`` and ``az-snp-vtpm`` verifiers.

Both verify the same hardware report signed by the same AMD keys; only where the VEK comes
from and what the report binds differ (see ``verifier.py`` and ``azure/snp_verifier.py``).
The checks, in checklist order:

* the report version within 3..5 (:func:`check_version`, ``ReportVersionUnsupported``);
* ECDSA P-384/SHA-384 by an accepted signing key (:func:`check_signature_algorithm`,
  ``SignatureAlgorithmUnsupported``);
* VMPL 0 (:func:`check_vmpl`, ``VmplNotZero``);
* the processor generation from CPUID, or from the VEK's issuer when the firmware zeroed CPUID
  (:func:`report_generation`, :func:`issuer_generation`, ``ProcessorUnsupported``);
* the VEK's extensions against the report: hwID == CHIP_ID for a VCEK (``HwIdMismatch``), the
  SPLs == REPORTED_TCB, fmc too on Turin (``TcbMismatch``) (:class:`VekExtensionCheck`);
* the report signature with the VEK's key (:func:`check_report_signature`,
  ``ReportSignatureInvalid``).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custodes._internal.bounded_cache import BoundedCache
from custodes.attestation.verifiers.snp.certs import (
    TURIN_HWID_SIZE,
    ChainVerifier,
    VekInfo,
    VerifiedVek,
)
from custodes.attestation.verifiers.snp.errors import (
    HwIdMismatch,
    ProcessorUnsupported,
    ReportSignatureInvalid,
    ReportVersionUnsupported,
    SignatureAlgorithmUnsupported,
    TcbMismatch,
    VekExtensionInvalid,
    VmplNotZero,
)
from custodes.attestation.verifiers.snp.report import ECDSA_P384_SHA384, SigningKey, SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation

MIN_REPORT_VERSION: Final = 3
MAX_REPORT_VERSION: Final = 5
MAX_CACHED_VEK_INFOS: Final = 1024
ANY_VEK: Final = (SigningKey.VCEK, SigningKey.VLEK)


def check_version(report: SnpReport) -> None:
    """The report version is within 3..5 (v2 lacks the CPUID fields)."""
    if not MIN_REPORT_VERSION <= report.version <= MAX_REPORT_VERSION:
        raise ReportVersionUnsupported(
            f"SNP report version {report.version} is not within "
            f"{MIN_REPORT_VERSION}..{MAX_REPORT_VERSION}"
            + ("; update the host's SNP firmware" if report.version < MIN_REPORT_VERSION else "")
        )


def check_signature_algorithm(
    report: SnpReport, accepted: Collection[SigningKey] = ANY_VEK
) -> SigningKey:
    """SIGNATURE_ALGO is ECDSA P-384/SHA-384 and SIGNING_KEY one of ``accepted``: which."""
    if report.signature_algo != ECDSA_P384_SHA384:
        raise SignatureAlgorithmUnsupported(
            f"SIGNATURE_ALGO {report.signature_algo} is not ECDSA P-384 with SHA-384"
        )
    signing_key = report.key_info.signing_key
    for kind in accepted:
        if signing_key == kind:
            return kind
    raise SignatureAlgorithmUnsupported(
        f"SIGNING_KEY {signing_key} is not " + " or ".join(k.name for k in accepted)
    )


def check_vmpl(report: SnpReport) -> None:
    """The report was requested from VMPL 0 (the guest kernel's, or on Azure the HCL's)."""
    if report.vmpl != 0:
        raise VmplNotZero(f"the report comes from VMPL {report.vmpl}, not VMPL 0")


def report_generation(report: SnpReport) -> Generation | None:
    """The generation CPUID names; ``None`` when the firmware zeroed CPUID (then the VEK's
    issuer names it, :func:`issuer_generation`)."""
    generation = report.generation
    if generation is None and report.cpuid_known:
        raise ProcessorUnsupported(
            f"CPUID family {report.cpuid_fam_id:#x} model {report.cpuid_mod_id:#x} "
            "is not Milan, Genoa or Turin"
        )
    return generation


def issuer_generation(chains: ChainVerifier, vek_der: bytes, kind: SigningKey) -> Generation:
    """The generation whose pinned ASK/ASVK issued ``vek_der``; the chain check that follows
    must still pass for it."""
    candidates = chains.generations_for(vek_der, kind)
    if not candidates:
        raise ProcessorUnsupported(f"no pinned ASK/ASVK issued the evidence's {kind.name}")
    return candidates[0]


class VekExtensionCheck:
    """The VEK's extensions against the report, with each verified VEK's :class:`VekInfo`
    cached: a chip's VEK does not change between reports, the comparison runs every time.

    The cache is shared by the worker threads that verify concurrently: bounded and locked.
    It is keyed by the identity of the ``VerifiedVek`` that the chain cache returns for the
    same DER; the entry holds that object, so its id cannot be reused while the entry lives.
    """

    def __init__(self) -> None:
        self.cache: BoundedCache[int, tuple[VerifiedVek, VekInfo]] = BoundedCache(
            MAX_CACHED_VEK_INFOS
        )

    def info(self, vek: VerifiedVek) -> VekInfo:
        cached = self.cache.get(id(vek))
        if cached is not None and cached[0] is vek:
            return cached[1]
        info = VekInfo.from_certificate(vek.certificate)
        self.cache.put(id(vek), (vek, info))
        return info

    def check(self, report: SnpReport, vek: VerifiedVek) -> None:
        """hwID == CHIP_ID for a VCEK (a VLEK names no chip); SPLs == REPORTED_TCB."""
        info = self.info(vek)
        if vek.kind is SigningKey.VCEK:
            check_hwid(info, report, vek.generation)
        check_tcb(info, report, vek.generation)


def check_hwid(info: VekInfo, report: SnpReport, generation: Generation) -> None:
    """The VCEK's hwID is the report's CHIP_ID (Turin: its first 8 bytes)."""
    if info.hwid is None:
        raise HwIdMismatch("the VCEK has no hwID extension")
    if len(info.hwid) == TURIN_HWID_SIZE and generation is Generation.TURIN:
        expected = report.chip_id[:TURIN_HWID_SIZE]
    else:
        expected = report.chip_id
    if not hmac.compare_digest(info.hwid, expected):
        raise HwIdMismatch("the VCEK was issued for another chip (hwID != CHIP_ID)")


def check_tcb(info: VekInfo, report: SnpReport, generation: Generation) -> None:
    """The VEK's SPL extensions equal REPORTED_TCB (fmc too on Turin)."""
    tcb = report.reported_tcb
    pairs: list[tuple[str, int | None, int | None]] = [
        ("bootloader", info.bootloader, tcb.bootloader),
        ("tee", info.tee, tcb.tee),
        ("snp", info.snp, tcb.snp),
        ("microcode", info.microcode, tcb.microcode),
    ]
    if generation is Generation.TURIN:
        if info.fmc is None:
            raise VekExtensionInvalid("a Turin VEK has an fmcSPL extension")
        pairs.append(("fmc", info.fmc, tcb.fmc))
    for name, certified, reported in pairs:
        if certified != reported:
            raise TcbMismatch(
                f"the VEK certifies {name} SPL {certified}, the report says {reported}"
            )


def check_report_signature(report: SnpReport, vek: VerifiedVek) -> None:
    """The report signature over bytes [0, 0x2A0) verifies with the VEK's key."""
    r, s = report.signature_ints
    try:
        vek.public_key.verify(
            encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384())
        )
    except InvalidSignature as e:
        raise ReportSignatureInvalid(f"the report is not signed by this {vek.kind.name}") from e
