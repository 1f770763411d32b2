"""NVIDIA GPU evidence for the tests: upstream's recorded Hopper reports, and derived reports
re-signed by a synthetic device PKI.

Recorded reports carry the nonce of the session they were captured in, so they cannot bind a
new session. The derived ones keep a recorded report's exact bytes (every measurement and
opaque field), set the SPDM request nonce, optionally change one measurement, and re-sign with
a test leaf key whose certificate has the same DICE TcbInfo FWID, under a test root that the
test passes to ``NvidiaVerifier(root=...)`` (the pinned NVIDIA root is replaced only there).
Nothing here is NVIDIA's: a derived report proves only that custodes' checks run on it.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ObjectIdentifier

from custodes.types.json import JsonObject
from custodes.types.tee import Tee

NVIDIA_VECTORS: Final = (
    Path(__file__).resolve().parent / "vectors/trustee/deps/verifier/test_data/nvidia"
)
ROOT_PEM: Final = (
    Path(__file__).resolve().parent
    / "vectors/trustee/deps/verifier/src/nvidia/nvidia_device_root.pem"
)
# The nonce hopperAttestationReport.txt was requested with (upstream's test).
RECORDED_NONCE: Final = bytes.fromhex(
    "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
)
# The report data hopper_coco_report1.txt binds (48 bytes; its first 32 are the SPDM nonce).
COCO_REPORT_DATA: Final = bytes.fromhex(
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec"
    "e279b616efefc2aae21da80cf5581250"
)
UUID: Final = "1111-2222-33333-444444-555555"
REQUEST_SIZE: Final = 37
SIGNATURE_SIZE: Final = 96
_TCB_INFO: Final = ObjectIdentifier("2.23.133.5.4.1")
_SHA384_OID: Final = bytes.fromhex("0609608648016503040202")


def recorded_report(name: str = "hopperAttestationReport.txt") -> bytes:
    return bytes.fromhex((NVIDIA_VECTORS / name).read_text().strip())


def recorded_chain(name: str = "hopper_cert_chain_case1.txt") -> bytes:
    return (NVIDIA_VECTORS / name).read_bytes()


def evidence(
    report: bytes, chain_pem: bytes, *, arch: str = "HOPPER", uuid: str = UUID
) -> JsonObject:
    """Upstream's ``nvidia`` evidence JSON for one device (report as hex)."""
    return {
        "device_evidence_list": [
            {
                "arch": arch,
                "uuid": uuid,
                "evidence": report.hex(),
                "certificate": base64.b64encode(chain_pem).decode(),
            }
        ]
    }


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + body


def tcb_info(fwid: bytes) -> bytes:
    """NVIDIA's TcbInfo layout: SEQUENCE { INTEGER 1, FWID SEQUENCE {sha384 OID, digest} }."""
    fwid_seq = _der(0x30, _SHA384_OID + _der(0x04, fwid))
    return _der(0x30, _der(0x02, b"\x01") + fwid_seq)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    fwid: bytes | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after or datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
    if fwid is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(_TCB_INFO, tcb_info(fwid)), False
        )
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class TestPki:
    """A synthetic device PKI: root -> intermediate -> leaf (with a FWID)."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def chain_pem(self) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (self.leaf, self.intermediate, self.root)
        )


def make_pki(fwid: bytes, *, leaf_not_after: datetime.datetime | None = None) -> TestPki:
    root_key = ec.generate_private_key(ec.SECP384R1())
    mid_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("Test Device Root", root_key, "Test Device Root", root_key, ca=True)
    mid = _cert("Test Device ICA", mid_key, "Test Device Root", root_key, ca=True)
    leaf = _cert(
        "Test GPU Leaf",
        leaf_key,
        "Test Device ICA",
        mid_key,
        ca=False,
        fwid=fwid,
        not_after=leaf_not_after,
    )
    return TestPki(root=root, intermediate=mid, leaf=leaf, leaf_key=leaf_key)


def recorded_fwid(report: bytes) -> bytes:
    """The FWID opaque item of a recorded report (type 20, 48 bytes)."""
    marker = (20).to_bytes(2, "little") + (48).to_bytes(2, "little")
    at = report.index(marker)
    return report[at + 4 : at + 52]


@cache
def shared_pki() -> TestPki:
    """One PKI for the recorded Hopper report's FWID (generated once per test run)."""
    return make_pki(recorded_fwid(recorded_report()))


def measurement_offset(report: bytes, index: int) -> tuple[int, int]:
    """(offset, size) of measurement ``index``'s value in ``report``."""
    record_length = int.from_bytes(report[REQUEST_SIZE + 5 : REQUEST_SIZE + 8], "little")
    offset = REQUEST_SIZE + 8
    end = offset + record_length
    while offset < end:
        block_index = report[offset]
        size = int.from_bytes(report[offset + 2 : offset + 4], "little")
        if block_index == index:
            return offset + 4 + 3, size - 3
        offset += 4 + size
    raise KeyError(index)


def signed_length(report: bytes) -> int:
    """How many bytes of ``report`` its signature covers (everything before it)."""
    record = int.from_bytes(report[REQUEST_SIZE + 5 : REQUEST_SIZE + 8], "little")
    offset = REQUEST_SIZE + 8 + record + 32
    return offset + 2 + int.from_bytes(report[offset : offset + 2], "little")


def resign(
    report: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    nonce: bytes | None = None,
    measurements: dict[int, bytes] | None = None,
    edit: dict[int, int] | None = None,
) -> bytes:
    """A derived report: the same bytes with a new request nonce, changed measurements or raw
    byte edits (offset -> value), signed again (ECDSA P-384, raw r || s)."""
    body = bytearray(report[: signed_length(report)])  # drops any padding after the signature
    if nonce is not None:
        body[4 : 4 + 32] = nonce[:32]
    for index, value in (measurements or {}).items():
        offset, size = measurement_offset(bytes(body), index)
        body[offset : offset + size] = value
    for position, byte in (edit or {}).items():
        body[position] = byte
    r, s = decode_dss_signature(key.sign(bytes(body), ec.ECDSA(hashes.SHA384())))
    return bytes(body) + r.to_bytes(48, "big") + s.to_bytes(48, "big")


class DerivedNvidiaAttester:
    """A guest-side ``nvidia`` attester over a derived report: recorded measurements, the
    session's nonce, re-signed by ``pki``. Stands in for NVML in tests of the broker."""

    tee: ClassVar[Tee] = Tee.NVIDIA

    def __init__(
        self, pki: TestPki | None = None, *, measurements: dict[int, bytes] | None = None
    ) -> None:
        self.pki = pki or shared_pki()
        self.measurements = measurements

    def evidence(self, report_data: bytes) -> JsonObject:
        report = resign(
            recorded_report(),
            self.pki.leaf_key,
            nonce=report_data[:32],
            measurements=self.measurements,
        )
        return evidence(report, self.pki.chain_pem)


def recorded_claims() -> JsonObject:
    claims: JsonObject = json.loads(
        (NVIDIA_VECTORS / "hopperAttestationReport-claims.txt").read_text()
    )
    return claims
