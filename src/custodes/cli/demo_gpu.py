"""The GPU of `custodes demo fraud --gpu`: a recorded H100 report, re-signed for the demo.

There is no GPU here, so the demo replays a recorded H100 report (the example's
``gpu/h100-report.hex``, upstream's recording) with each session's nonce, re-signed by a demo
device key made at start whose root only the demo's broker trusts. The broker's NVIDIA verifier
runs every real check on it (chain, FWID, signature, nonce); what it cannot give is any proof
about a GPU. This module exists for the demo and nothing else.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.verifiers.nvidia import HopperReport, NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.nvidia.certs import OID_TCG_DICE_TCB_INFO
from custodes.errors import ConfigError, EvidenceError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

NONCE: Final = slice(4, 36)  # the GET_MEASUREMENTS request nonce
_SHA384_OID_DER: Final = bytes.fromhex("0609608648016503040202")
DEBUG_INDEX: Final = 2  # the measurement the "debug mode" GPU reports differently


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class DemoGpu:
    """The recorded report and the demo's device PKI (root -> leaf holding the FWID)."""

    report: HopperReport
    root: x509.Certificate
    leaf: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load(cls, path: Path) -> DemoGpu:
        try:
            report = HopperReport.parse(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError, EvidenceError) as e:
            raise ConfigError(f"cannot read the recorded GPU report {path}: {e}") from e
        root_key = ec.generate_private_key(ec.SECP384R1())
        key = ec.generate_private_key(ec.SECP384R1())
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
        end = start + datetime.timedelta(days=2)
        root = (
            x509.CertificateBuilder()
            .subject_name(_name("custodes demo GPU root (INSECURE)"))
            .issuer_name(_name("custodes demo GPU root (INSECURE)"))
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA384())
        )
        fwid = _der(0x30, _SHA384_OID_DER + _der(0x04, report.response.opaque.fwid))
        tcb_info = _der(0x30, _der(0x02, b"\x01") + fwid)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name("custodes demo GPU (replays a recorded H100 report)"))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.UnrecognizedExtension(OID_TCG_DICE_TCB_INFO, tcb_info), False)
            .sign(root_key, hashes.SHA384())
        )
        return cls(report=report, root=root, leaf=leaf, key=key)

    def verifier(self, clock: Clock) -> NvidiaVerifier:
        """The NVIDIA verifier with the demo root in place of NVIDIA's (demo broker only)."""
        return NvidiaVerifier(NvidiaVerifierConfig(clock=clock), root=self.root)

    def reference_values(self) -> JsonObject:
        """What ``default_gpu`` needs to trust the recorded GPU: its golden measurements and
        versions (in real use, from NVIDIA's signed RIMs)."""
        opaque = self.report.response.opaque
        return {
            "nvidia_gpu_measurements": [
                f"{i}:{v.hex()}" for i, v in sorted(self.report.measurements.items())
            ],
            "allowed_driver_versions": [opaque.driver_version],
            "allowed_vbios_versions": [opaque.vbios_version],
        }

    def attester(self, *, debug_mode: bool = False) -> RecordedGpuAttester:
        return RecordedGpuAttester(self, debug_mode=debug_mode)

    def sign(self, report_data: bytes, *, debug_mode: bool) -> bytes:
        body = bytearray(self.report.signed_bytes)
        body[NONCE] = report_data[: NONCE.stop - NONCE.start]
        if debug_mode:
            golden = self.report.measurements[DEBUG_INDEX]
            at = bytes(body).find(golden)
            if at < 0 or bytes(body).count(golden) != 1:
                raise ConfigError("the recorded report's measurement 2 is not unique")
            body[at : at + len(golden)] = bytes(len(golden))
        der = self.key.sign(bytes(body), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return bytes(body) + r.to_bytes(48, "big") + s.to_bytes(48, "big")


class RecordedGpuAttester:
    """The demo guest's ``nvidia`` attester (see the module docstring)."""

    tee: ClassVar[Tee] = Tee.NVIDIA

    def __init__(self, gpu: DemoGpu, *, debug_mode: bool) -> None:
        self._gpu = gpu
        self._debug = debug_mode

    def evidence(self, report_data: bytes) -> JsonObject:
        chain = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (self._gpu.leaf, self._gpu.root)
        )
        return {
            "device_evidence_list": [
                {
                    "arch": "HOPPER",
                    "uuid": "GPU-demo-debug" if self._debug else "GPU-demo",
                    "evidence": self._gpu.sign(report_data, debug_mode=self._debug).hex(),
                    "certificate": b64std_encode(chain),
                }
            ]
        }
