"""The GPU's device certificate chain: the pinned NVIDIA root, each link, the leaf's FWID.

Upstream's shape (leaf first, root last): ``GH100 A01 GSP FMC LF`` (the attestation key, with
the DICE TcbInfo extension carrying the firmware's FWID) <- ``GH100 A01 GSP BROM`` (per
device) <- ``NVIDIA GH100 Provisioner ICA 1`` <- ``NVIDIA GH100 Identity`` <- ``NVIDIA
Device Identity CA`` (the root). The chain has a fixed, short shape, so each link is checked
directly (``verify_directly_issued_by``) rather than with a web-PKI path builder: every
issuer must be a CA allowed to sign certificates, every certificate must be inside its
validity window on the injected clock, and the last certificate must be byte-identical to the
pinned root. Revocation (NVIDIA's OCSP responder) is not consulted: verification is offline.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier

from custodes.attestation.verifiers.nvidia.errors import DeviceChainInvalid, FwidMismatch
from custodes.attestation.verifiers.x509ext import extension_value
from custodes.errors import ConfigError, MalformedEvidence

# SHA-256 of the pinned root's DER: the package data must still be what was reviewed.
ROOT_SHA256: Final = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
OID_TCG_DICE_TCB_INFO: Final = ObjectIdentifier("2.23.133.5.4.1")
_SHA384_OID_DER: Final = bytes.fromhex("0609608648016503040202")
FWID_SIZE: Final = 48
_MAX_CHAIN: Final = 8


def load_pinned_root(filename: str, sha256_hex: str, what: str) -> x509.Certificate:
    """An NVIDIA root shipped in ``roots/``, refused unless its SHA-256 is the reviewed one."""
    pem = resources.files(__package__).joinpath("roots", filename).read_bytes()
    root = x509.load_pem_x509_certificate(pem)
    if not hmac.compare_digest(root.fingerprint(hashes.SHA256()).hex(), sha256_hex):
        raise ConfigError(f"the pinned NVIDIA {what} root does not match its fingerprint")
    return root


@cache
def pinned_root() -> x509.Certificate:
    """NVIDIA's device identity root, shipped in ``roots/`` (see its README for provenance)."""
    return load_pinned_root("nvidia_device_root.pem", ROOT_SHA256, "device")


def parse_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """Step 1: the PEM chain, leaf first (at most eight certificates)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise MalformedEvidence("nvidia evidence: certificate is not a PEM chain") from e
    if len(certs) > _MAX_CHAIN:
        raise MalformedEvidence(f"nvidia evidence: {len(certs)} certificates is too many")
    return tuple(certs)


@dataclass(frozen=True, slots=True)
class DeviceChain:
    """A verified chain: its leaf signs reports."""

    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePublicKey


def subject_name(cert: x509.Certificate) -> str:
    """A certificate's common name (else its whole subject), as the chains' errors name it."""
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def check_issuer(
    issuer: x509.Certificate, below: int, error: Callable[[str], Exception] = DeviceChainInvalid
) -> None:
    """An issuing link of an NVIDIA chain (device or RIM): a CA whose path length allows the
    ``below`` certificates under it and which may sign certificates; else ``error``."""
    constraints = extension_value(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise error(f"{subject_name(issuer)!r} is not a CA certificate")
    if constraints.path_length is not None and below > constraints.path_length:
        raise error(f"{subject_name(issuer)!r} allows a path of {constraints.path_length}")
    usage = extension_value(issuer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise error(f"{subject_name(issuer)!r} may not sign certificates")


def check_windows(certs: tuple[x509.Certificate, ...], now: float) -> None:
    """Step 4, the part that depends on the time: every certificate is valid at ``now``."""
    for cert in certs:
        start = cert.not_valid_before_utc.timestamp()
        end = cert.not_valid_after_utc.timestamp()
        if not start <= now <= end:
            raise DeviceChainInvalid(f"{subject_name(cert)!r} is outside its validity window")


def verify_chain(
    certs: tuple[x509.Certificate, ...], root: x509.Certificate, now: float
) -> DeviceChain:
    """Step 4: leaf -> … -> the pinned root, every link and window checked."""
    if len(certs) < 2:
        raise DeviceChainInvalid(
            "the device certificate chain needs at least the signing certificate and the root"
        )
    if not hmac.compare_digest(
        certs[-1].public_bytes(Encoding.DER), root.public_bytes(Encoding.DER)
    ):
        raise DeviceChainInvalid("the device certificate chain does not end at NVIDIA's root")
    check_windows(certs, now)
    for position, cert in enumerate(certs[:-1]):
        issuer = certs[position + 1]
        check_issuer(issuer, below=position)
        if not isinstance(issuer.public_key(), ec.EllipticCurvePublicKey):
            raise DeviceChainInvalid(f"{subject_name(issuer)!r} does not hold an EC key")
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise DeviceChainInvalid(
                f"{subject_name(cert)!r} is not issued by {subject_name(issuer)!r}: "
                "the chain is broken"
            ) from e
    leaf = certs[0]
    constraints = extension_value(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise DeviceChainInvalid(
            f"the first certificate {subject_name(leaf)!r} is a CA, not the device's signing "
            "certificate: the leaf is missing"
        )
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise DeviceChainInvalid("the signing certificate does not hold a P-384 key")
    usage = extension_value(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise DeviceChainInvalid("the signing certificate may not sign")
    return DeviceChain(leaf=leaf, leaf_key=key)


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER element at ``offset``: (tag, contents, next offset)."""
    if len(data) - offset < 2:
        raise ValueError("truncated element")
    tag, first = data[offset], data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 0 < count <= 3 or len(data) - offset < count:
            raise ValueError("bad length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if len(data) - offset < length:
        raise ValueError("element runs past its parent")
    return tag, data[offset : offset + length], offset + length


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        tag, value, offset = _tlv(data, offset)
        out.append((tag, value))
    return out


def _sha384_fwid(tag: int, value: bytes) -> bytes | None:
    """The digest when the element is ``FWID ::= SEQUENCE {hashAlg OID sha384, digest}``."""
    if tag != 0x30:
        return None
    parts = _children(value)
    if len(parts) != 2 or parts[0][0] != 0x06 or parts[1][0] != 0x04:
        return None
    if b"\x06" + bytes([len(parts[0][1])]) + parts[0][1] != _SHA384_OID_DER:
        return None
    return parts[1][1]


def leaf_fwid(leaf: x509.Certificate) -> bytes:
    """Step 5: the SHA-384 FWID of the leaf's TCG DICE TcbInfo extension (2.23.133.5.4.1).

    NVIDIA's extension is a SEQUENCE whose members include one ``FWID`` (SHA-384 OID, 48-byte
    digest); the TCG layout puts the FWIDs in ``[6] fwids``. Both are read; exactly one
    SHA-384 FWID of 48 bytes must be present.
    """
    try:
        ext = leaf.extensions.get_extension_for_oid(OID_TCG_DICE_TCB_INFO)
    except x509.ExtensionNotFound:
        raise FwidMismatch(
            "the signing certificate has no DICE TcbInfo (FWID) extension; is the leaf missing?"
        ) from None
    raw = ext.value
    der = raw.value if isinstance(raw, x509.UnrecognizedExtension) else b""
    found: list[bytes] = []
    try:
        tag, body, end = _tlv(der, 0)
        if tag != 0x30 or end != len(der):
            raise ValueError("not one SEQUENCE")
        for child_tag, child in _children(body):
            candidates = _children(child) if child_tag == 0xA6 else [(child_tag, child)]
            for candidate_tag, candidate in candidates:
                fwid = _sha384_fwid(candidate_tag, candidate)
                if fwid is not None:
                    found.append(fwid)
    except ValueError as e:
        raise FwidMismatch(f"the signing certificate's TcbInfo extension is malformed: {e}") from e
    if len(found) != 1 or len(found[0]) != FWID_SIZE:
        raise FwidMismatch("the signing certificate's TcbInfo carries no single SHA-384 FWID")
    return found[0]
