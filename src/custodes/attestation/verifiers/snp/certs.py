"""AMD's certificate chain for SNP: pinned roots, ARK -> ASK/ASVK -> VCEK/VLEK, VEK extensions.

The chain has a fixed shape, and every AMD CA signature is RSASSA-PSS with SHA-384, an algorithm
that ``cryptography``'s X.509 path builder (web PKI profile) refuses. So this module checks the
three links with ``Certificate.verify_directly_issued_by`` and enforces the algorithm, the
issuer's key type and the validity windows itself; nothing else here builds paths.

Evidence-supplied certificates: an ARK must be byte-identical to the pinned ARK; an ASK/ASVK
is used only when it carries the pinned intermediate's subject name (AMD re-issuing it) and
verifies under the pinned ARK. Otherwise the pinned ASK (VCEK) or ASVK (VLEK) is used.

Verified VEKs are cached by (generation, kind, DER), so a repeated verification costs the
validity-window comparisons and no RSA work.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ObjectIdentifier

from custodes._internal.bounded_cache import BoundedCache
from custodes.attestation.verifiers.snp.errors import VekChainInvalid, VekExtensionInvalid
from custodes.attestation.verifiers.snp.report import SigningKey
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.errors import ConfigError

# AMD's VCEK spec (#57230) extensions, under 1.3.6.1.4.1.3704.1 (AMD).
OID_BL_SPL: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.3.1")
OID_TEE_SPL: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.3.2")
OID_SNP_SPL: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.3.3")
OID_UCODE_SPL: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.3.8")
OID_FMC_SPL: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.3.9")  # Turin
OID_HWID: Final = ObjectIdentifier("1.3.6.1.4.1.3704.1.4")  # VCEK only

HWID_SIZE: Final = 64
TURIN_HWID_SIZE: Final = 8

# SHA-256 of each pinned ARK's DER: the package data must still be what was reviewed.
ARK_SHA256: Final[Mapping[Generation, str]] = MappingProxyType(
    {
        Generation.MILAN: "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        Generation.GENOA: "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        Generation.TURIN: "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    }
)

_MAX_CACHED_VEKS: Final = 1024
_VekKey = tuple[Generation, SigningKey, bytes]


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    """Parse a DER certificate, tolerating AMD's serial number 0 on VCEKs/VLEKs.

    ``cryptography`` warns about non-positive serials (RFC 5280 wants them positive); every
    AMD VEK has serial 0, so that one warning is silenced here and nowhere else.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Parsed a serial number which wasn't positive",
            category=CryptographyDeprecationWarning,
        )
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise VekChainInvalid(f"{what} is not a DER X.509 certificate") from e


@dataclass(frozen=True, slots=True)
class AmdRoots:
    """One generation's AMD CAs: ARK (root), ASK (signs VCEKs), ASVK (signs VLEKs)."""

    generation: Generation
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate

    @classmethod
    def from_pem(cls, generation: Generation, pem: bytes) -> AmdRoots:
        """Load a bundle in upstream's order: ASK, ARK, ASVK."""
        certs = x509.load_pem_x509_certificates(pem)
        if len(certs) != 3:
            raise ConfigError(f"{generation} CA bundle holds {len(certs)} certificates, not 3")
        ask, ark, asvk = certs
        return cls(generation=generation, ark=ark, ask=ask, asvk=asvk)

    def intermediate(self, kind: SigningKey) -> x509.Certificate:
        return self.asvk if kind is SigningKey.VLEK else self.ask


@cache
def pinned_roots() -> Mapping[Generation, AmdRoots]:
    """The AMD CA bundles shipped in ``roots/`` (see its README for provenance)."""
    roots = {}
    folder = resources.files(__package__).joinpath("roots")
    for generation in Generation:
        pem = folder.joinpath(f"{generation.lower()}_ask_ark_asvk.pem").read_bytes()
        bundle = AmdRoots.from_pem(generation, pem)
        digest = bundle.ark.fingerprint(hashes.SHA256()).hex()
        if not hmac.compare_digest(digest, ARK_SHA256[generation]):
            raise ConfigError(f"pinned {generation} ARK does not match its fingerprint")
        roots[generation] = bundle
    return roots


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def check_amd_signature(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    """``cert`` is signed by ``issuer``'s RSA key with RSASSA-PSS/SHA-384 (AMD's only scheme)."""
    try:
        params = cert.signature_algorithm_parameters
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm as e:
        raise VekChainInvalid(f"{what} uses an unsupported signature algorithm") from e
    if not isinstance(params, padding.PSS) or not isinstance(digest, hashes.SHA384):
        raise VekChainInvalid(f"{what} is not signed with RSASSA-PSS/SHA-384")
    if not isinstance(issuer.public_key(), rsa.RSAPublicKey):
        raise VekChainInvalid(f"the issuer of {what} has no RSA key")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise VekChainInvalid(f"{what} is not issued by {_common_name(issuer)}") from e


def _window(cert: x509.Certificate, what: str) -> tuple[float, float, str]:
    return (cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(), what)


def _check_windows(windows: Iterable[tuple[float, float, str]], now: float) -> None:
    for not_before, not_after, what in windows:
        if not not_before <= now <= not_after:
            raise VekChainInvalid(f"{what} is not valid at the verification time")


@dataclass(frozen=True, slots=True)
class VekInfo:
    """The AMD extensions of a VCEK/VLEK: hwID (VCEK only) and the TCB it was issued for."""

    hwid: bytes | None
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> VekInfo:
        try:
            extensions = {e.oid: e.value for e in cert.extensions}
        except (ValueError, x509.DuplicateExtension) as e:
            raise VekExtensionInvalid("the VEK's extensions do not parse") from e

        def raw(oid: ObjectIdentifier) -> bytes | None:
            value = extensions.get(oid)
            if value is None:
                return None
            if not isinstance(value, x509.UnrecognizedExtension):
                raise VekExtensionInvalid(f"unexpected extension type for {oid.dotted_string}")
            return value.value

        def spl(oid: ObjectIdentifier) -> int:
            value = raw(oid)
            if value is None:
                raise VekExtensionInvalid(f"the VEK has no {oid.dotted_string} extension")
            return _der_small_uint(value, oid)

        fmc_raw = raw(OID_FMC_SPL)
        hwid_raw = raw(OID_HWID)
        return cls(
            hwid=None if hwid_raw is None else _hwid(hwid_raw),
            bootloader=spl(OID_BL_SPL),
            tee=spl(OID_TEE_SPL),
            snp=spl(OID_SNP_SPL),
            microcode=spl(OID_UCODE_SPL),
            fmc=None if fmc_raw is None else _der_small_uint(fmc_raw, OID_FMC_SPL),
        )


def _der_small_uint(value: bytes, oid: ObjectIdentifier) -> int:
    """A DER INTEGER in 0..255 (1 or 2 content bytes, minimal, non-negative)."""
    body = value[2:]
    if (
        len(value) < 3
        or value[0] != 0x02
        or value[1] != len(body)
        or len(body) > 2
        or body[0] & 0x80
        or (len(body) == 2 and (body[0] != 0 or not body[1] & 0x80))
    ):
        raise VekExtensionInvalid(f"extension {oid.dotted_string} is not a DER INTEGER 0..255")
    return int.from_bytes(body, "big")


def _hwid(value: bytes) -> bytes:
    """The hwID, in either encoding AMD used: the 64 raw bytes (older VCEKs) or a DER
    OCTET STRING holding them. Turin VCEKs may carry an 8-byte hwID (VCEK spec footnote)."""
    if len(value) == HWID_SIZE:
        return value
    if len(value) >= 2 and value[0] == 0x04 and value[1] == len(value) - 2:
        if len(value) - 2 in (HWID_SIZE, TURIN_HWID_SIZE):
            return value[2:]
    elif len(value) == TURIN_HWID_SIZE:
        return value
    raise VekExtensionInvalid(f"hwID extension of {len(value)} bytes is malformed")


@dataclass(frozen=True, slots=True)
class VerifiedVek:
    """A VCEK/VLEK whose chain to a pinned ARK verified."""

    generation: Generation
    kind: SigningKey
    certificate: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    windows: tuple[tuple[float, float, str], ...]


class ChainVerifier:
    """Verifies ARK -> ASK/ASVK -> VEK against pinned roots, caching what verified."""

    def __init__(self, roots: Mapping[Generation, AmdRoots]) -> None:
        self._roots = dict(roots)
        self._roots_ok: set[Generation] = set()
        self._ark_der = {g: r.ark.public_bytes(Encoding.DER) for g, r in self._roots.items()}
        self._intermediates_ok: set[tuple[Generation, bytes]] = set()
        # Shared by the worker threads that verify concurrently: bounded and locked.
        self._veks: BoundedCache[_VekKey, VerifiedVek] = BoundedCache(_MAX_CACHED_VEKS)

    def generations_for(self, vek_der: bytes, kind: SigningKey) -> list[Generation]:
        """Generations whose ASK/ASVK name issued this VEK: for reports without CPUID."""
        issuer = load_der_certificate(vek_der, str(kind.name)).issuer
        return [g for g, r in self._roots.items() if r.intermediate(kind).subject == issuer]

    def verify(
        self,
        vek_der: bytes,
        kind: SigningKey,
        generation: Generation,
        *,
        now: float,
        provided_arks: Iterable[bytes] = (),
        provided_intermediates: Iterable[bytes] = (),
    ) -> VerifiedVek:
        """Verify ``vek_der`` for ``generation`` at time ``now`` (seconds since the epoch)."""
        what = kind.name
        roots = self._roots.get(generation)
        if roots is None:
            raise VekChainInvalid(f"no pinned AMD roots for {generation}")
        self._check_roots(roots)
        for ark_der in provided_arks:
            if not hmac.compare_digest(ark_der, self._ark_der[generation]):
                raise VekChainInvalid(f"the evidence carries an ARK that is not AMD's {generation}")

        key = (generation, kind, vek_der)
        cached = self._veks.get(key)
        if cached is not None:
            _check_windows(cached.windows, now)
            return cached

        vek = load_der_certificate(vek_der, what)
        intermediate = self._issuer(roots, kind, vek, provided_intermediates)
        public_key = vek.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP384R1
        ):
            raise VekChainInvalid(f"the {what} key is not ECDSA P-384")
        windows = (
            _window(roots.ark, "ARK"),
            _window(intermediate, _common_name(intermediate)),
            _window(vek, what),
        )
        _check_windows(windows, now)
        verified = VerifiedVek(generation, kind, vek, public_key, windows)
        self._veks.put(key, verified)
        return verified

    def _check_roots(self, roots: AmdRoots) -> None:
        if roots.generation in self._roots_ok:
            return
        check_amd_signature(roots.ark, roots.ark, f"ARK-{roots.generation}")
        check_amd_signature(roots.ask, roots.ark, f"ASK-{roots.generation}")
        check_amd_signature(roots.asvk, roots.ark, f"ASVK-{roots.generation}")
        self._roots_ok.add(roots.generation)

    def _issuer(
        self,
        roots: AmdRoots,
        kind: SigningKey,
        vek: x509.Certificate,
        provided: Iterable[bytes],
    ) -> x509.Certificate:
        """The intermediate that signed ``vek``: the pinned one, else an evidence-supplied
        re-issue of it (same subject, signed by the pinned ARK, a CA)."""
        pinned = roots.intermediate(kind)
        try:
            check_amd_signature(vek, pinned, kind.name)
            return pinned
        except VekChainInvalid as e:
            refusal = e
        for der in provided:
            cert = load_der_certificate(der, "ASK")
            if cert.subject != pinned.subject or cert.public_key() == pinned.public_key():
                continue
            self._check_reissued(roots, cert, der)
            check_amd_signature(vek, cert, kind.name)
            return cert
        raise refusal

    def _check_reissued(self, roots: AmdRoots, cert: x509.Certificate, der: bytes) -> None:
        key = (roots.generation, hashlib.sha256(der).digest())
        if key in self._intermediates_ok:
            return
        check_amd_signature(cert, roots.ark, "the evidence's ASK")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension) as e:
            raise VekChainInvalid("the evidence's ASK has no valid CA constraint") from e
        if not is_ca:
            raise VekChainInvalid("the evidence's ASK is not a CA")
        self._intermediates_ok.add(key)
