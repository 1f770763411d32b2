"""The NVIDIA GPU (``nvidia``) local verifier, Hopper: a numbered checklist, one error class
per step. One piece of evidence may carry several GPUs; each is checked in full and becomes
one ``gpu`` claims entry (EAR submodules ``gpu0``, ``gpu1``, … in list order).

(1) parse the evidence JSON, the report and the certificate chain (evidence.py, spdm.py,
    opaque.py, certs.py): MalformedEvidence.
(2) the device is a Hopper GPU: ArchitectureUnsupported (Blackwell and NVSwitch evidence
    needs NVIDIA's remote service or a newer local verifier; refused, never half-checked).
(3) the SPDM exchange is SPDM 1.1 GET_MEASUREMENTS for all measurements with a signature,
    answered by MEASUREMENTS from the same slot: SpdmMessageInvalid.
(4) the chain ends at the pinned NVIDIA device root, every link verifies, every issuer is a
    CA, every certificate is inside its validity window: DeviceChainInvalid.
(5) the leaf's DICE TcbInfo FWID equals the report's FWID: FwidMismatch.
(6) the ECDSA P-384 signature (SHA-384) over the exact signed bytes verifies with the leaf's
    key: ReportSignatureInvalid.
(7) the request nonce (signed in step 6) is the session's device binding digest, upstream's
    rule: the SPDM nonce holds 32 bytes, so it is the digest's first 32 bytes (a SHA-384
    digest keeps 256 bits of it); a digest shorter than 32 bytes is refused, never padded:
    NonceMismatch.
(8) claims with upstream's names: ``arch``, ``uuid``, ``measurements`` (index -> hex) and
    ``config`` (the opaque data fields: driver and VBIOS versions, FWID, SKUs, …).

What the report does not say: a Hopper report has no debug or secure-boot bit. NVIDIA's own
verifiers derive both from the measurements: secure boot and debug disabled when every
measurement equals the golden value of NVIDIA's signed reference manifests (RIMs). custodes
does the same in the ``default_gpu`` policy, against reference values the workload admin
registers (``nvidia_gpu_measurements``, or the golden values of NVIDIA RIMs the admin provides,
verified offline by ``rim.py`` when registered); it never fetches RIMs.
Revocation of the device certificates (NVIDIA's OCSP) is not checked: verification is offline.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import ClassVar, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custodes._internal.bounded_cache import BoundedCache
from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.nvidia.certs import (
    DeviceChain,
    check_windows,
    leaf_fwid,
    parse_chain,
    pinned_root,
    verify_chain,
)
from custodes.attestation.verifiers.nvidia.errors import (
    ArchitectureUnsupported,
    FwidMismatch,
    NonceMismatch,
    ReportSignatureInvalid,
)
from custodes.attestation.verifiers.nvidia.evidence import DeviceEvidence, parse_evidence
from custodes.attestation.verifiers.nvidia.spdm import (
    NONCE_SIZE,
    SIGNATURE_SIZE,
    HopperReport,
    check_exchange,
)
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

HOPPER: Final = "Hopper"
_MAX_CACHED_CHAINS: Final = 1024


@dataclass(frozen=True, slots=True)
class NvidiaVerifierConfig:
    """The clock for the certificates' validity windows."""

    clock: Clock = field(default_factory=SystemClock)


@dataclass(frozen=True, slots=True)
class VerifiedGpu:
    """One GPU that passed every step."""

    device: DeviceEvidence
    report: HopperReport
    chain: DeviceChain


class NvidiaVerifier:
    """Verifies ``nvidia`` evidence locally; see the module docstring for the checklist."""

    tee: ClassVar[Tee] = Tee.NVIDIA

    def __init__(
        self, config: NvidiaVerifierConfig | None = None, *, root: x509.Certificate | None = None
    ) -> None:
        """``root`` replaces the pinned NVIDIA root (tests with a synthetic PKI only)."""
        self._config = config or NvidiaVerifierConfig()
        self._root = pinned_root() if root is None else root
        # Verified chains by their exact text as sent (one per GPU): a repeated attestation
        # costs the validity-window comparisons, not four ECDSA verifies. Shared by the
        # broker's worker threads, so bounded and locked.
        self._chains: BoundedCache[str, tuple[tuple[x509.Certificate, ...], DeviceChain]] = (
            BoundedCache(_MAX_CACHED_CHAINS)
        )

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        if request.tee is not Tee.NVIDIA:
            raise ValueError(f"the NVIDIA verifier cannot verify {request.tee} evidence")
        devices = parse_evidence(request.evidence)  # (1)
        return [
            VerifiedClaims(TeeClass.GPU, gpu_claims(self.verify_device(d, request.report_data)))
            for d in devices
        ]

    def verify_device(self, device: DeviceEvidence, report_data: bytes) -> VerifiedGpu:
        """Steps 2-7 for one GPU."""
        if device.arch != HOPPER:  # (2)
            raise ArchitectureUnsupported(
                f"{device.arch} evidence cannot be verified locally; only Hopper GPUs are"
            )
        report = HopperReport.parse(device.report)  # (1)
        check_exchange(report)  # (3)
        chain = self._verified_chain(device)  # (1), (4)
        if not hmac.compare_digest(leaf_fwid(chain.leaf), report.response.opaque.fwid):  # (5)
            raise FwidMismatch("the report's FWID is not the one its signing certificate holds")
        _check_signature(report, chain.leaf_key)  # (6)
        _check_nonce(report, report_data)  # (7)
        return VerifiedGpu(device=device, report=report, chain=chain)

    def _verified_chain(self, device: DeviceEvidence) -> DeviceChain:
        now = self._config.clock.now()
        cached = self._chains.get(device.certificate)
        if cached is not None:
            certs, chain = cached
            check_windows(certs, now)
            return chain
        certs = parse_chain(device.certificate_pem())
        chain = verify_chain(certs, self._root, now)
        self._chains.put(device.certificate, (certs, chain))
        return chain


def _check_signature(report: HopperReport, key: ec.EllipticCurvePublicKey) -> None:
    signature = report.response.signature
    half = SIGNATURE_SIZE // 2
    r = int.from_bytes(signature[:half], "big")
    s = int.from_bytes(signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise ReportSignatureInvalid("the report is not signed by the device's key") from e


def _check_nonce(report: HopperReport, report_data: bytes) -> None:
    if len(report_data) < NONCE_SIZE:
        raise NonceMismatch(
            f"a {len(report_data)}-byte binding digest cannot fill the 32-byte SPDM nonce"
        )
    if not hmac.compare_digest(report.request.nonce, report_data[:NONCE_SIZE]):
        raise NonceMismatch("the report's nonce is not this session's device binding digest")


def gpu_claims(gpu: VerifiedGpu) -> JsonObject:
    """Upstream's local-verifier claims for one GPU (what ``default_gpu`` reads)."""
    return {
        "arch": gpu.device.arch,
        "uuid": gpu.device.uuid,
        "measurements": {str(i): v.hex() for i, v in sorted(gpu.report.measurements.items())},
        "config": dict(gpu.report.response.opaque.config),
    }


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> NvidiaVerifier:
    """The registry's factory: device evidence only (additional evidence next to a CPU TEE),
    verified fully offline against the pinned root."""
    return NvidiaVerifier(NvidiaVerifierConfig(clock=clock))
