"""NVIDIA reference integrity manifests (RIMs), checked offline: a SWID tag (ISO/IEC 19770-2)
with the golden measurements of one VBIOS or driver version, signed with an enveloped XML-DSig
signature whose ``KeyInfo`` carries the signer's certificate chain.

The checklist, one error class per step (all are ``ReferenceValueError``: a RIM is what an
admin registers, not evidence):

(1) parse (:class:`RimMalformed`): at most 1 MiB of UTF-8 XML, no DOCTYPE (so no entity can be
    expanded), the root is a SWID ``SoftwareIdentity``; exactly one ``Meta`` with
    ``colloquialVersion``, ``product``, ``edition`` and the TCG RIM ``PlatformManufacturerStr``;
    exactly one ``Payload`` of ``Resource type="Measurement"`` elements, each with a unique
    ``index`` in 0..63, ``active`` ``True``/``False``, ``size`` 48, ``alternatives`` N >= 1 and
    exactly the attributes ``Hash0`` .. ``Hash{N-1}`` (SHA-384 namespace), each 96 hex digits;
    exactly one ``ds:Signature``, a child of the root, with 2..8 ``X509Certificate``.
(2) the chain (:class:`RimChainInvalid`): leaf first; the last certificate is byte-identical to
    the pinned NVIDIA RIM root (``roots/nvidia_rim_root.pem``); each certificate is signed by
    the next; every issuer is a CA allowed to sign certificates (basicConstraints, pathLen,
    keyCertSign); the leaf is not a CA, may sign and holds a P-384 key.
(3) the clock (:class:`RimChainInvalid`): every certificate is inside its validity window.
(4) the signature (:class:`RimSignatureInvalid`): ECDSA P-384 / SHA-384 by the leaf over the
    canonicalized ``SignedInfo``, whose single reference (``URI=""``, SHA-384, enveloped) covers
    the whole document but the signature (signxml, the library NVIDIA's own verifier uses).
(5) the result is read from the signed bytes only (what step 4 verified), never from the text
    as received: product, version, and the *active* measurements with their alternatives.

Not checked, and why: revocation of the RIM certificates (NVIDIA's OCSP responder) — the check
is offline; the XSD schema (the strict reading in step 1 accepts less than the schema). Which
component a RIM describes is not in the RIM: a ``colloquialVersion`` of five two-digit hex
groups (``96.00.74.00.1C``) is a VBIOS, of two or three decimal groups (``550.90.07``) a driver.

RIM indices count from 0; the SPDM report's measurement blocks (and so the ``nvidia`` claims)
count from 1: RIM index ``i`` is report measurement ``i + 1``.
"""

from __future__ import annotations

import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from types import MappingProxyType
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from custodes.attestation.verifiers.nvidia.certs import check_issuer, load_pinned_root, subject_name
from custodes.attestation.verifiers.x509ext import extension_value
from custodes.errors import ReferenceValueError

# SHA-256 of the pinned RIM root's DER (see roots/README.md for where it came from).
RIM_ROOT_SHA256: Final = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"
MAX_RIM_BYTES: Final = 1 << 20
MEASUREMENT_SIZE: Final = 48  # SHA-384
MAX_INDEX: Final = 63
MAX_ALTERNATIVES: Final = 16
_MAX_CHAIN: Final = 8
SWID_NS: Final = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd"
RIM_NS: Final = "https://trustedcomputinggroup.org/resource/tcg-reference-integrity-manifest-rim-information-model/"
HASH_NS: Final = "http://www.w3.org/2001/04/xmlenc#sha384"
DSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_INDEX: Final = re.compile(r"0|[1-9][0-9]{0,2}")
_VBIOS_VERSION: Final = re.compile(r"[0-9A-Fa-f]{2}(?:\.[0-9A-Fa-f]{2}){4}")
_DRIVER_VERSION: Final = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){1,2}")
_RESOURCE_ATTRIBUTES: Final = frozenset({"type", "index", "active", "alternatives", "name", "size"})

Component = Literal["vbios", "driver"]


class RimError(ReferenceValueError):
    """A RIM was refused."""

    code = "nvidia-rim"


class RimMalformed(RimError):
    """Step 1: the RIM is not a SWID tag of the expected shape."""

    code = "nvidia-rim-malformed"


class RimChainInvalid(RimError):
    """Steps 2-3: the signer's chain does not end at the pinned NVIDIA RIM root, a link does
    not verify, or a certificate is outside its validity window."""

    code = "nvidia-rim-chain"


class RimSignatureInvalid(RimError):
    """Step 4: the XML signature does not verify with the chain's leaf."""

    code = "nvidia-rim-signature"


@dataclass(frozen=True, slots=True)
class GoldenMeasurement:
    """One active RIM measurement: any of ``values`` is golden."""

    index: int  # the RIM's index, from 0 (report measurement ``index + 1``)
    name: str
    values: tuple[bytes, ...]

    @property
    def report_index(self) -> int:
        """The SPDM measurement block (the ``nvidia`` claims' key) this index describes."""
        return self.index + 1


@dataclass(frozen=True, slots=True)
class Rim:
    """A RIM that passed every step; everything here was read from the signed bytes."""

    component: Component
    manufacturer: str
    product: str
    edition: str
    version: str  # colloquialVersion, as written
    tag_id: str
    measurements: Mapping[int, GoldenMeasurement]  # active only, by RIM index
    signer: str
    not_after: datetime  # the earliest end of a validity window in the chain

    @property
    def normalized_version(self) -> str:
        """The version as the report's claims spell it (lower case)."""
        return self.version.lower()


@cache
def pinned_rim_root() -> x509.Certificate:
    """NVIDIA's RIM signing root, shipped in ``roots/`` (see its README for provenance)."""
    return load_pinned_root("nvidia_rim_root.pem", RIM_ROOT_SHA256, "RIM")


def verify_rim(document: bytes, *, now: datetime, root: x509.Certificate | None = None) -> Rim:
    """Steps 1-5 for one RIM; ``root`` replaces the pinned root (tests with a synthetic CA)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    tree = _parse(document)  # (1)
    _body(tree)  # (1): the shape, before any cryptography, for one precise error
    certs = _certificates(tree)  # (1)
    leaf = _verify_chain(certs, pinned_rim_root() if root is None else root)  # (2)
    _check_windows(certs, now)  # (3)
    signed = _verify_signature(document, leaf, now)  # (4)
    meta, measurements = _body(signed)  # (5)
    version = meta["colloquialVersion"]
    return Rim(
        component=_component(version),
        manufacturer=meta["manufacturer"],
        product=meta["product"],
        edition=meta["edition"],
        version=version,
        tag_id=meta["tagId"],
        measurements=MappingProxyType(measurements),
        signer=subject_name(leaf),
        not_after=min(c.not_valid_after_utc for c in certs),
    )


# --- (1) parse ---------------------------------------------------------------------------


def _parse(document: bytes) -> Any:
    # Imported here: heavy, and only an admin registering a RIM needs it.
    from lxml import etree  # type: ignore[import-untyped]

    if len(document) > MAX_RIM_BYTES:
        raise RimMalformed(f"the RIM is larger than {MAX_RIM_BYTES} bytes")
    try:
        document.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RimMalformed("the RIM is not UTF-8 text") from e
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        tree = etree.fromstring(document, parser)
    except etree.XMLSyntaxError as e:
        raise RimMalformed(f"the RIM is not well-formed XML: {e}") from e
    if tree.getroottree().docinfo.doctype:
        raise RimMalformed("the RIM has a DOCTYPE; a RIM needs none (entities are refused)")
    return tree


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _only(parent: Any, namespace: str, name: str, what: str) -> Any:
    found = [child for child in parent if child.tag == _q(namespace, name)]
    if len(found) != 1:
        raise RimMalformed(f"the RIM has {len(found)} {what} elements, not one")
    return found[0]


def _attribute(element: Any, name: str, what: str) -> str:
    value = element.get(name)
    if not isinstance(value, str) or not value:
        raise RimMalformed(f"{what} has no {name.rsplit('}', 1)[-1]!r}")
    return value


def _body(root: Any) -> tuple[dict[str, str], dict[int, GoldenMeasurement]]:
    """Meta and the active measurements of a ``SoftwareIdentity`` element."""
    if root.tag != _q(SWID_NS, "SoftwareIdentity"):
        raise RimMalformed("the RIM's root element is not a SWID SoftwareIdentity")
    meta_element = _only(root, SWID_NS, "Meta", "Meta")
    meta = {
        key: _attribute(meta_element, key, "the RIM's Meta")
        for key in ("colloquialVersion", "product", "edition")
    }
    meta["manufacturer"] = _attribute(
        meta_element, _q(RIM_NS, "PlatformManufacturerStr"), "the RIM's Meta"
    )
    meta["tagId"] = _attribute(root, "tagId", "the RIM's SoftwareIdentity")
    _component(meta["colloquialVersion"])
    payload = _only(root, SWID_NS, "Payload", "Payload")
    measurements: dict[int, GoldenMeasurement] = {}
    seen: set[int] = set()
    resources_found = 0
    for resource in payload:
        if not isinstance(resource.tag, str):
            continue  # a comment or processing instruction carries nothing
        resources_found += 1
        index, active, golden = _resource(resource)
        if index in seen:
            raise RimMalformed(f"the RIM lists measurement index {index} twice")
        seen.add(index)
        if active:
            measurements[index] = golden
    if resources_found == 0:
        raise RimMalformed("the RIM's Payload lists no measurement")
    if not measurements:
        raise RimMalformed("the RIM has no active measurement")
    return meta, measurements


def _resource(resource: Any) -> tuple[int, bool, GoldenMeasurement]:
    if resource.tag != _q(SWID_NS, "Resource") or resource.get("type") != "Measurement":
        raise RimMalformed("the RIM's Payload holds something other than a Measurement resource")
    text = _attribute(resource, "index", "a RIM Resource")
    if not _INDEX.fullmatch(text) or int(text) > MAX_INDEX:
        raise RimMalformed(f"RIM measurement index {text!r} is not in 0..{MAX_INDEX}")
    index = int(text)
    where = f"RIM measurement {index}"
    active_text = _attribute(resource, "active", where)
    if active_text not in ("True", "False"):
        raise RimMalformed(f"{where}: active={active_text!r} is neither True nor False")
    if _attribute(resource, "size", where) != str(MEASUREMENT_SIZE):
        raise RimMalformed(f"{where}: size {resource.get('size')!r} is not {MEASUREMENT_SIZE}")
    count_text = _attribute(resource, "alternatives", where)
    if not _INDEX.fullmatch(count_text) or not 1 <= int(count_text) <= MAX_ALTERNATIVES:
        raise RimMalformed(f"{where}: alternatives={count_text!r} is not in 1..{MAX_ALTERNATIVES}")
    count = int(count_text)
    expected = {_q(HASH_NS, f"Hash{i}") for i in range(count)}
    present = {key for key in resource.attrib if key not in _RESOURCE_ATTRIBUTES}
    if present != expected:
        raise RimMalformed(
            f"{where}: expected exactly the attributes Hash0..Hash{count - 1} (SHA-384) for "
            f"alternatives={count}"
        )
    values = []
    for i in range(count):
        digest = resource.get(_q(HASH_NS, f"Hash{i}"))
        if not _HEX.fullmatch(digest) or len(digest) != 2 * MEASUREMENT_SIZE:
            raise RimMalformed(
                f"{where}: Hash{i} is not {MEASUREMENT_SIZE} bytes of hex ({len(digest)} chars)"
            )
        values.append(binascii.unhexlify(digest))
    name = resource.get("name") or f"Measurement_{index}"
    return index, active_text == "True", GoldenMeasurement(index, name, tuple(values))


def _component(version: str) -> Component:
    if _VBIOS_VERSION.fullmatch(version):
        return "vbios"
    if _DRIVER_VERSION.fullmatch(version):
        return "driver"
    raise RimMalformed(
        f"colloquialVersion {version!r} is neither a VBIOS version (like 96.00.74.00.1C) nor a "
        "driver version (like 550.90.07)"
    )


def _certificates(root: Any) -> tuple[x509.Certificate, ...]:
    signature = _only(root, DSIG_NS, "Signature", "ds:Signature")
    key_info = _only(signature, DSIG_NS, "KeyInfo", "ds:KeyInfo")
    data = _only(key_info, DSIG_NS, "X509Data", "ds:X509Data")
    texts = [c.text or "" for c in data if c.tag == _q(DSIG_NS, "X509Certificate")]
    if not 2 <= len(texts) <= _MAX_CHAIN:
        raise RimMalformed(
            f"the RIM's KeyInfo holds {len(texts)} certificates, not 2..{_MAX_CHAIN}"
        )
    certs = []
    for position, text in enumerate(texts):
        try:
            der = binascii.a2b_base64("".join(text.split()), strict_mode=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError) as e:
            raise RimMalformed(f"the RIM's certificate {position} is not a DER certificate") from e
    return tuple(certs)


# --- (2), (3) the chain --------------------------------------------------------------------


def _verify_chain(certs: tuple[x509.Certificate, ...], root: x509.Certificate) -> x509.Certificate:
    if not hmac.compare_digest(
        certs[-1].public_bytes(Encoding.DER), root.public_bytes(Encoding.DER)
    ):
        raise RimChainInvalid(
            f"the RIM's certificate chain ends at {subject_name(certs[-1])!r}, not at the pinned "
            "NVIDIA RIM root"
        )
    for position, cert in enumerate(certs[:-1]):
        issuer = certs[position + 1]
        check_issuer(issuer, position, RimChainInvalid)
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise RimChainInvalid(
                f"{subject_name(cert)!r} is not issued by {subject_name(issuer)!r}: "
                "the RIM's chain is broken"
            ) from e
    leaf = certs[0]
    constraints = extension_value(leaf, x509.BasicConstraints)
    if constraints is not None and constraints.ca:
        raise RimChainInvalid(f"the RIM's signing certificate {subject_name(leaf)!r} is a CA")
    usage = extension_value(leaf, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise RimChainInvalid(f"the RIM's signing certificate {subject_name(leaf)!r} may not sign")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise RimChainInvalid("the RIM's signing certificate does not hold a P-384 key")
    return leaf


def _check_windows(certs: tuple[x509.Certificate, ...], now: datetime) -> None:
    for cert in certs:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise RimChainInvalid(
                f"the RIM's certificate {subject_name(cert)!r} is outside its validity window "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
            )


# --- (4) the signature -----------------------------------------------------------------------


def _verify_signature(document: bytes, leaf: x509.Certificate, now: datetime) -> Any:
    """The signed ``SoftwareIdentity`` (without its signature), as signxml verified it."""
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.exceptions import SignXMLException
    from signxml.verifier import SignatureConfiguration, XMLVerifier

    config = SignatureConfiguration(
        location="./",  # the signature is a child of the root: enveloped, nowhere else
        expect_references=1,
        signature_methods=frozenset({SignatureMethod.ECDSA_SHA384}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA384}),
        verification_time=now.astimezone(UTC),
    )
    try:
        result = XMLVerifier().verify(document, x509_cert=leaf, expect_config=config)
    except (SignXMLException, InvalidSignature) as e:
        raise RimSignatureInvalid(f"the RIM's XML signature does not verify: {e}") from e
    except Exception as e:  # any other failure inside the library: not verified, fail closed
        raise RimSignatureInvalid(
            f"the RIM's XML signature does not verify: {type(e).__name__}"
        ) from e
    signed = None if isinstance(result, list) else result.signed_xml
    if signed is None or signed.tag != _q(SWID_NS, "SoftwareIdentity"):
        raise RimSignatureInvalid("the RIM's signature does not cover its SoftwareIdentity")
    return signed
