"""NVIDIA RIMs for the tests: upstream's recorded RIM (a real, NVIDIA-signed VBIOS RIM), and
RIMs derived from the recorded Hopper report, signed by a synthetic RIM CA.

The recorded report (VBIOS 96.00.9f.00.01) and the recorded RIM (VBIOS 96.00.74.00.1C)
describe different VBIOS builds, so the real pair can only show a refusal. A RIM that matches
the report is derived: NVIDIA's SWID layout, the report's own measurements as golden values
(VBIOS RIM: the indices NVIDIA's VBIOS RIM marks active; driver RIM: the others the report
measures), signed (enveloped XML-DSig, ECDSA P-384 / SHA-384, C14N 1.1, as NVIDIA signs) by
``Test RIM Signer`` <- ``Test RIM CA`` <- ``Test RIM Root``, generated per test run. Such a
RIM verifies only where a test passes that root (``verify_rim(root=...)``,
``parse_message(rim_root=...)``); under NVIDIA's pinned root it is refused. Nothing here is
NVIDIA's but the recorded RIM.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nvidia_support import recorded_claims

RIM_VECTOR: Final = (
    Path(__file__).resolve().parent / "vectors/trustee/rvps/src/extractors/swid/test-rim.b64"
)
# The recorded RIM's chain is valid from 2023-12-05 to 2025-12-04 (its signer's window).
RIM_VALID_AT: Final = datetime.datetime(2024, 6, 1, tzinfo=datetime.UTC)
RECORDED_RIM_VERSION: Final = "96.00.74.00.1C"
# The RIM indices (from 0) NVIDIA's VBIOS RIM for GH100 marks active; the driver RIM measures
# the others.
VBIOS_INDICES: Final = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12})

_SWID: Final = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
_RIM: Final = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
_HASH: Final = "http://www.w3.org/2001/04/xmlenc#sha384"


def recorded_rim() -> bytes:
    """Upstream's test RIM, decoded (20 462 bytes of signed SWID XML)."""
    return base64.b64decode(RIM_VECTOR.read_text(encoding="ascii"), validate=True)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_after: datetime.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    )
    usage = (
        x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        if ca
        else x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    )
    return builder.add_extension(usage, True).sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class RimPki:
    """A synthetic RIM signing PKI: root -> CA -> signer (all P-384)."""

    root: x509.Certificate
    ca: x509.Certificate
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.signer, self.ca, self.root]


def make_rim_pki(*, signer_not_after: datetime.datetime | None = None) -> RimPki:
    root_key = ec.generate_private_key(ec.SECP384R1())
    ca_key = ec.generate_private_key(ec.SECP384R1())
    signer_key = ec.generate_private_key(ec.SECP384R1())
    far = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)
    root = _cert("Test RIM Root", root_key, "Test RIM Root", root_key, ca=True, not_after=far)
    ca = _cert("Test RIM CA", ca_key, "Test RIM Root", root_key, ca=True, not_after=far)
    signer = _cert(
        "Test RIM Signer",
        signer_key,
        "Test RIM CA",
        ca_key,
        ca=False,
        not_after=signer_not_after or far,
    )
    return RimPki(root=root, ca=ca, signer=signer, signer_key=signer_key)


@cache
def shared_rim_pki() -> RimPki:
    return make_rim_pki()


def swid_xml(
    version: str,
    golden: Mapping[int, Sequence[bytes]],
    *,
    product: str = "GH100",
    hash_text: Mapping[int, str] | None = None,
) -> Any:
    """An unsigned SWID tag in NVIDIA's layout: every index 0..63, ``golden`` ones active.
    ``hash_text`` overrides one index's Hash0 text (malformed-RIM tests)."""
    from lxml import etree  # type: ignore[import-untyped]

    root = etree.Element(
        f"{{{_SWID}}}SoftwareIdentity",
        nsmap={None: _SWID, "ns2": _HASH},
        corpus="false",
        name=product,
        patch="false",
        supplemental="false",
        tagId="derived-" + version,
        version="1.0",
        tagVersion="0",
    )
    etree.SubElement(root, f"{{{_SWID}}}Entity", name="NVIDIA Corporation", role="tagCreator")
    meta = etree.SubElement(root, f"{{{_SWID}}}Meta", nsmap={"ns1": _RIM})
    meta.set("colloquialVersion", version)
    meta.set("edition", "GPU")
    meta.set("product", product)
    meta.set("revision", "r1")
    meta.set(f"{{{_RIM}}}PlatformManufacturerStr", "NVIDIA Corporation")
    payload = etree.SubElement(root, f"{{{_SWID}}}Payload")
    for index in range(64):
        values = list(golden.get(index, [bytes(48)]))
        resource = etree.SubElement(payload, f"{{{_SWID}}}Resource")
        resource.set("type", "Measurement")
        resource.set("index", str(index))
        resource.set("active", "True" if index in golden else "False")
        resource.set("alternatives", str(len(values)))
        for i, value in enumerate(values):
            resource.set(f"{{{_HASH}}}Hash{i}", value.hex())
        if hash_text is not None and index in hash_text:
            resource.set(f"{{{_HASH}}}Hash0", hash_text[index])
        resource.set("name", f"Measurement_{index}")
        resource.set("size", "48")
    return root


def sign_rim(root: Any, pki: RimPki, *, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """``root`` signed as NVIDIA signs RIMs; ``key`` signs instead of the signer's own key."""
    from lxml import etree
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
    from signxml.signer import XMLSigner

    signer = XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA384,
        digest_algorithm=DigestAlgorithm.SHA384,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_1,
    )
    signed = signer.sign(root, key=key or pki.signer_key, cert=pki.chain)
    text: bytes = etree.tostring(signed)
    return text


def report_golden() -> dict[int, list[bytes]]:
    """The recorded report's measurements by RIM index (report index - 1)."""
    measurements = recorded_claims()["measurements"]
    assert isinstance(measurements, dict)
    return {int(i) - 1: [bytes.fromhex(str(v))] for i, v in measurements.items()}


def derived_rims(
    pki: RimPki | None = None, *, change: Mapping[int, bytes] | None = None
) -> tuple[bytes, bytes]:
    """(VBIOS RIM, driver RIM) whose golden values are the recorded report's own (with the
    ``change``s, by RIM index), for its versions 96.00.9f.00.01 and 550.90.07."""
    pki = pki or shared_rim_pki()
    golden = report_golden()
    for index, value in (change or {}).items():
        golden[index] = [value]
    vbios = {i: v for i, v in golden.items() if i in VBIOS_INDICES}
    driver = {i: v for i, v in golden.items() if i not in VBIOS_INDICES and any(v[0])}
    return (
        sign_rim(swid_xml("96.00.9F.00.01", vbios), pki),
        sign_rim(swid_xml("550.90.07", driver), pki),
    )
