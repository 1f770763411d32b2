"""DCAP collateral for TDX quotes: what it is, where it comes from, and when it is current.

Collateral = PCK CRL (+ issuer chain), Intel SGX Root CA CRL, TDX TCB info for the platform's
FMSPC (+ signature, issuer chain), TD QE identity (+ signature, issuer chain).

Sources (one per verifier):

* :class:`FileCollateralSource` — a JSON file, either
  - **dcap-qvl's** form (``pck_crl_issuer_chain``, ``root_ca_crl`` (hex DER), ``pck_crl`` (hex
    DER), ``tcb_info_issuer_chain``, ``tcb_info`` (the signed JSON text), ``tcb_info_signature``
    (hex), ``qe_identity_issuer_chain``, ``qe_identity``, ``qe_identity_signature``); it holds
    one platform's collateral, so a quote from another FMSPC is refused; or
  - **Intel PcsClientTool's** form (``{"collaterals": {"tcbinfos": [{fmspc, tdx_tcbinfo(_early)
    …}], "pckcacrl": {processorCrl, platformCrl}, "tdqeidentity(_early)", "certificates":
    {"TCB-Info-Issuer-Chain", "SGX-Enclave-Identity-Issuer-Chain",
    "SGX-PCK-Certificate-Issuer-Chain"?: {PROCESSOR, PLATFORM}}, "rootcacrl" (hex DER)}}``),
    as trustee reads it. Its TCB info and QE identity are JSON objects, so the signed text is
    rebuilt in Intel's compact form (key order kept; Intel's signature is over that form).
    Without ``SGX-PCK-Certificate-Issuer-Chain`` the PCK CRL issuer chain is the quote's own
    PCK chain minus its leaf (the CA that issues the CRL and the root).
* :class:`PccsCollateralSource` — Intel PCS or a PCCS (API v4) through an injected
  ``fetcher`` (tests use a fake, never the network), with a cache per (FMSPC, CA) kept until
  the earliest ``nextUpdate`` of the collateral or ``cache_ttl``, whichever comes first. The
  Root CA CRL is fetched from the CRL distribution point of the QE identity's signing
  certificate (as trustee does).

The fetcher returns the response **headers** as well as the body: PCS/PCCS deliver the issuer
chains of the TCB info, QE identity and PCK CRL only in the ``TCB-Info-Issuer-Chain``,
``SGX-Enclave-Identity-Issuer-Chain`` and ``SGX-PCK-CRL-Issuer-Chain`` headers.

Currency: :meth:`Collateral.check` refuses collateral outside its window (TCB info and
QE identity ``issueDate``/``nextUpdate``, CRL ``thisUpdate``/``nextUpdate``, issuer
certificates' validity) with :class:`~custodes.errors.CollateralError`, before dcap-qvl runs
(dcap-qvl also refuses; its messages for an expired CRL are not precise). Intel's QVL instead
accepts expired collateral and reports ``collateral_expiration_status = "1"``; custodes refuses
it, so the claim is always ``"0"``.

Cost: what does not depend on the time (parsing the parts' windows, both CRL signatures) is
computed once per collateral value and kept in a bounded cache (:func:`_static_facts`, at most
:data:`MAX_CHECKED_COLLATERALS` entries); the window itself is compared with ``now`` on every
call. The quote's PCK chain minus its leaf is cached the same way (:func:`_issuer_chain_of`).
"""

from __future__ import annotations

import binascii
import functools
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol
from urllib.parse import quote as urlquote
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from custodes.attestation.verifiers.x509ext import extension_value
from custodes.errors import CollateralError, ConfigError
from custodes.types.json import JsonObject

if TYPE_CHECKING:
    import httpx

TcbUpdate = Literal["early", "standard"]
DEFAULT_CACHE_TTL: Final = 24 * 3600.0
MAX_CHECKED_COLLATERALS: Final = 64  # collateral values whose parse and CRL signatures are kept
MAX_CACHED_ISSUER_CHAINS: Final = 256  # quote PCK chains (one per platform) -> issuer chain
_HEX: Final = re.compile(rb"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class PcsResponse:
    """One PCS/PCCS answer: the body and the HTTP headers (names in any case)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        raise CollateralError(f"PCS response lacks the {name} header")


Fetcher = Callable[[str], PcsResponse]
"""GET a URL and return its body and headers; raise on transport errors or non-2xx."""


def httpx_fetcher(client: httpx.Client, timeout: float = 10.0) -> Fetcher:
    """A :data:`Fetcher` over an ``httpx.Client`` (non-2xx answers raise)."""

    def fetch(url: str) -> PcsResponse:
        response = client.get(url, timeout=timeout)
        response.raise_for_status()
        return PcsResponse(bytes(response.content), dict(response.headers))

    return fetch


# --- the collateral itself ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Collateral:
    pck_crl_issuer_chain: str  # PEM
    root_ca_crl: bytes  # DER
    pck_crl: bytes  # DER
    tcb_info_issuer_chain: str  # PEM
    tcb_info: str  # the exact signed JSON text of the TCB info
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str  # PEM
    qe_identity: str  # the exact signed JSON text of the QE identity
    qe_identity_signature: bytes

    @classmethod
    def from_dcap_qvl_json(cls, obj: object) -> Collateral:
        if not isinstance(obj, dict):
            raise CollateralError("collateral JSON must be an object")
        return cls(
            pck_crl_issuer_chain=_text(obj, "pck_crl_issuer_chain"),
            root_ca_crl=_crl_bytes(_text(obj, "root_ca_crl")),
            pck_crl=_crl_bytes(_text(obj, "pck_crl")),
            tcb_info_issuer_chain=_text(obj, "tcb_info_issuer_chain"),
            tcb_info=_text(obj, "tcb_info"),
            tcb_info_signature=_hex(_text(obj, "tcb_info_signature"), "tcb_info_signature"),
            qe_identity_issuer_chain=_text(obj, "qe_identity_issuer_chain"),
            qe_identity=_text(obj, "qe_identity"),
            qe_identity_signature=_hex(
                _text(obj, "qe_identity_signature"), "qe_identity_signature"
            ),
        )

    @property
    def fmspc(self) -> str:
        value = _json_object(self.tcb_info, "TCB info").get("fmspc")
        if not isinstance(value, str):
            raise CollateralError("TCB info lacks fmspc")
        return value.upper()

    def window(self) -> tuple[float, float]:
        """(not before, not after) in Unix seconds: the intersection of every part's window."""
        facts = _static_facts(self)
        return facts.not_before, facts.not_after

    def check(self, now: float) -> None:
        """``CollateralError`` unless every part of the collateral is valid at ``now`` and each
        CRL is signed by its issuer (the PCK CRL by the first certificate of its issuer chain,
        the Root CA CRL by that chain's root). dcap-qvl checks both too, but reports a badly
        signed CRL and a revoked PCK certificate with the same message.

        The parse and the signatures are cached per collateral value; the window is compared
        with ``now`` on every call."""
        facts = _static_facts(self)
        if now < facts.not_before:
            raise CollateralError("collateral is not yet valid")
        if now >= facts.not_after:
            raise CollateralError("collateral has expired")
        if facts.crl_failure is not None:
            raise CollateralError(facts.crl_failure)


@dataclass(frozen=True, slots=True)
class _StaticFacts:
    """What :meth:`Collateral.check` needs that does not depend on the time."""

    not_before: float
    not_after: float
    crl_failure: str | None  # why a CRL's signature failed, None when both verify


@functools.lru_cache(maxsize=MAX_CHECKED_COLLATERALS)
def _static_facts(collateral: Collateral) -> _StaticFacts:
    """Parse every part's validity window and verify both CRL signatures, once per value.

    Raises ``CollateralError`` for unparsable parts (not cached: ``lru_cache`` keeps only
    results). A bad CRL signature is a result, kept with the window, so that the window is
    still reported first, as :meth:`Collateral.check` always did."""
    starts: list[float] = []
    ends: list[float] = []
    for text, what in (
        (collateral.tcb_info, "TCB info"),
        (collateral.qe_identity, "QE identity"),
    ):
        doc = _json_object(text, what)
        starts.append(_timestamp(doc.get("issueDate"), f"{what} issueDate"))
        ends.append(_timestamp(doc.get("nextUpdate"), f"{what} nextUpdate"))
    crls = {}
    for der, what in ((collateral.pck_crl, "PCK CRL"), (collateral.root_ca_crl, "Root CA CRL")):
        crl = _load_crl(der, what)
        if crl.next_update_utc is None:
            raise CollateralError(f"{what} has no nextUpdate")
        starts.append(crl.last_update_utc.timestamp())
        ends.append(crl.next_update_utc.timestamp())
        crls[what] = crl
    chains = [
        _load_chain(chain)
        for chain in (
            collateral.pck_crl_issuer_chain,
            collateral.tcb_info_issuer_chain,
            collateral.qe_identity_issuer_chain,
        )
    ]
    for certs in chains:
        for cert in certs:
            starts.append(cert.not_valid_before_utc.timestamp())
            ends.append(cert.not_valid_after_utc.timestamp())
    failure = None
    pck_crl_chain = chains[0]
    for what, issuer in (("PCK CRL", pck_crl_chain[0]), ("Root CA CRL", pck_crl_chain[-1])):
        key = issuer.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not crls[what].is_signature_valid(key):
            failure = f"{what} is not signed by its issuer"
            break
    return _StaticFacts(max(starts), min(ends), failure)


class CollateralSource(Protocol):
    def collateral_for(
        self, *, fmspc: str, ca: str, pck_chain_pem: bytes, now: float
    ) -> Collateral:
        """Collateral for a platform (FMSPC, PCK CA type) or ``CollateralError``."""
        ...


# --- sources -----------------------------------------------------------------------------


class FileCollateralSource:
    """Collateral read once from a JSON file (dcap-qvl or PcsClientTool form)."""

    def __init__(self, path: Path, *, update: TcbUpdate = "early") -> None:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read TDX collateral file {path}") from e
        try:
            if isinstance(doc, dict) and "collaterals" in doc:
                self._lookup = _PcsClientToolCollaterals(doc["collaterals"], update).collateral_for
            else:
                self._lookup = _SingleCollateral(Collateral.from_dcap_qvl_json(doc)).collateral_for
        except CollateralError as e:
            raise ConfigError(f"invalid TDX collateral file {path}: {e}") from e

    def collateral_for(
        self, *, fmspc: str, ca: str, pck_chain_pem: bytes, now: float
    ) -> Collateral:
        return self._lookup(fmspc, ca, pck_chain_pem)


class _SingleCollateral:
    """dcap-qvl's form: one platform's collateral."""

    def __init__(self, collateral: Collateral) -> None:
        collateral.window()  # parses every part now: a bad file is a configuration error
        self._collateral = collateral
        self._fmspc = collateral.fmspc  # the file never changes: parse its TCB info once

    def collateral_for(self, fmspc: str, ca: str, pck_chain_pem: bytes) -> Collateral:
        if self._fmspc != fmspc.upper():
            raise CollateralError(f"no collateral for FMSPC {fmspc}")
        return self._collateral


class _PcsClientToolCollaterals:
    def __init__(self, obj: object, update: TcbUpdate) -> None:
        if not isinstance(obj, dict):
            raise CollateralError("collaterals must be an object")
        self._update = update
        self._tcbinfos: dict[str, tuple[str, bytes]] = {}
        entries = obj.get("tcbinfos")
        if not isinstance(entries, list):
            raise CollateralError("collaterals.tcbinfos must be a list")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("fmspc"), str):
                raise CollateralError("collaterals.tcbinfos entries need an fmspc")
            chosen = self._choose(entry, "tdx_tcbinfo")
            if chosen is not None:
                self._tcbinfos[entry["fmspc"].upper()] = _signed_part(chosen, "tcbInfo")
        qe = self._choose(obj, "tdqeidentity")
        if qe is None:
            raise CollateralError("collaterals lack tdqeidentity")
        self._qe_identity = _signed_part(qe, "enclaveIdentity")
        crls = obj.get("pckcacrl")
        if not isinstance(crls, dict):
            raise CollateralError("collaterals.pckcacrl must be an object")
        self._pck_crls = {
            "processor": _crl_bytes(_text(crls, "processorCrl")),
            "platform": _crl_bytes(_text(crls, "platformCrl")),
        }
        certs = obj.get("certificates")
        if not isinstance(certs, dict):
            raise CollateralError("collaterals.certificates must be an object")
        self._tcb_chain = _pem_chain(_text(certs, "TCB-Info-Issuer-Chain"))
        self._qe_chain = _pem_chain(_text(certs, "SGX-Enclave-Identity-Issuer-Chain"))
        self._pck_crl_chains: dict[str, str] = {}
        pck_chains = certs.get("SGX-PCK-Certificate-Issuer-Chain")
        if isinstance(pck_chains, dict):
            for ca in ("processor", "platform"):
                self._pck_crl_chains[ca] = _pem_chain(_text(pck_chains, ca.upper()))
        self._root_ca_crl = _crl_bytes(_text(obj, "rootcacrl"))

    def _choose(self, obj: Mapping[str, object], name: str) -> object | None:
        """``<name>_early`` for early updates when present, else ``<name>``."""
        if self._update == "early" and obj.get(f"{name}_early") is not None:
            return obj[f"{name}_early"]
        return obj.get(name)

    def collateral_for(self, fmspc: str, ca: str, pck_chain_pem: bytes) -> Collateral:
        tcb = self._tcbinfos.get(fmspc.upper())
        if tcb is None:
            raise CollateralError(f"no TDX TCB info for FMSPC {fmspc}")
        if ca not in self._pck_crls:
            raise CollateralError(f"unknown PCK CA type {ca!r}")
        chain = self._pck_crl_chains.get(ca) or _issuer_chain_of(pck_chain_pem)
        return Collateral(
            pck_crl_issuer_chain=chain,
            root_ca_crl=self._root_ca_crl,
            pck_crl=self._pck_crls[ca],
            tcb_info_issuer_chain=self._tcb_chain,
            tcb_info=tcb[0],
            tcb_info_signature=tcb[1],
            qe_identity_issuer_chain=self._qe_chain,
            qe_identity=self._qe_identity[0],
            qe_identity_signature=self._qe_identity[1],
        )


class PccsCollateralSource:
    """Collateral from Intel PCS or a PCCS (API v4), cached per (FMSPC, CA type)."""

    def __init__(
        self,
        base_url: str,
        fetcher: Fetcher,
        *,
        update: TcbUpdate = "early",
        cache_ttl: float = DEFAULT_CACHE_TTL,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ConfigError("PCCS URL must be http(s)")
        self._base = base_url.rstrip("/")
        self._fetch = fetcher
        self._update = update
        self._ttl = cache_ttl
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[Collateral, float]] = {}

    def collateral_for(
        self, *, fmspc: str, ca: str, pck_chain_pem: bytes, now: float
    ) -> Collateral:
        key = (fmspc.upper(), ca)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now < hit[1]:
            return hit[0]
        collateral = self._download(key[0], ca)
        expires = min(now + self._ttl, collateral.window()[1])
        with self._lock:
            self._cache[key] = (collateral, expires)
        return collateral

    def _get(self, url: str) -> PcsResponse:
        try:
            return self._fetch(url)
        except CollateralError:
            raise
        except Exception as e:  # the fetcher's transport and HTTP errors, whatever their type
            raise CollateralError(f"fetching {url} failed") from e

    def _download(self, fmspc: str, ca: str) -> Collateral:
        if ca not in ("platform", "processor"):
            raise CollateralError(f"unknown PCK CA type {ca!r}")
        tdx = f"{self._base}/tdx/certification/v4"
        sgx = f"{self._base}/sgx/certification/v4"
        tcb = self._get(f"{tdx}/tcb?fmspc={urlquote(fmspc)}&update={self._update}")
        qe = self._get(f"{tdx}/qe/identity?update={self._update}")
        crl = self._get(f"{sgx}/pckcrl?ca={ca}&encoding=der")
        tcb_text, tcb_sig = _signed_part(_decode_utf8(tcb.body), "tcbInfo")
        qe_text, qe_sig = _signed_part(_decode_utf8(qe.body), "enclaveIdentity")
        qe_chain = _pem_chain(qe.header("SGX-Enclave-Identity-Issuer-Chain"))
        root_crl = self._get(_root_crl_url(qe_chain))
        return Collateral(
            pck_crl_issuer_chain=_pem_chain(crl.header("SGX-PCK-CRL-Issuer-Chain")),
            root_ca_crl=_crl_bytes(root_crl.body),
            pck_crl=_crl_bytes(crl.body),
            tcb_info_issuer_chain=_pem_chain(tcb.header("TCB-Info-Issuer-Chain")),
            tcb_info=tcb_text,
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=qe_chain,
            qe_identity=qe_text,
            qe_identity_signature=qe_sig,
        )


# --- helpers -----------------------------------------------------------------------------


def _text(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise CollateralError(f"collateral field {key!r} must be a non-empty string")
    return value


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CollateralError(f"collateral field {what!r} is not hex") from None


def _decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralError("PCS response is not UTF-8") from None


def _crl_bytes(value: str | bytes) -> bytes:
    """A CRL given as DER, PEM, or hex text of DER (PCCS serves the Root CA CRL in hex)."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    stripped = raw.strip()
    if stripped.startswith(b"-----BEGIN X509 CRL-----"):
        try:
            der = x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except ValueError:
            raise CollateralError("unreadable PEM CRL") from None
    elif _HEX.fullmatch(stripped) and len(stripped) % 2 == 0:
        try:
            der = binascii.unhexlify(stripped)
        except binascii.Error:
            raise CollateralError("CRL is not valid hex") from None
    else:
        der = bytes(raw)
    _load_crl(der, "CRL")
    return der


def _load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    try:
        return x509.load_der_x509_crl(der)
    except ValueError:
        raise CollateralError(f"{what} is not a DER CRL") from None


def _load_chain(pem: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CollateralError("issuer chain is not PEM certificates") from None
    return certs


def _pem_chain(value: str) -> str:
    """A PEM chain, URL-decoding it first when it comes from an HTTP header (PEM has no %)."""
    text = unquote(value) if "%" in value else value
    _load_chain(text)
    return text


@functools.lru_cache(maxsize=MAX_CACHED_ISSUER_CHAINS)
def _issuer_chain_of(pck_chain_pem: bytes) -> str:
    """The quote's PCK chain without its leaf: the PCK CA that issues the CRL, and the root.

    Cached by the chain's bytes (one chain per platform; failures are not cached)."""
    try:
        certs = x509.load_pem_x509_certificates(pck_chain_pem.rstrip(b"\x00"))
    except ValueError:
        raise CollateralError("the quote's PCK chain is not PEM") from None
    if len(certs) < 2:
        raise CollateralError("the quote's PCK chain has no issuer")
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs[1:])


def _root_crl_url(qe_chain: str) -> str:
    leaf = _load_chain(qe_chain)[0]
    points = extension_value(leaf, x509.CRLDistributionPoints)
    if points is None:
        raise CollateralError("QE identity signer has no CRL distribution point")
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    raise CollateralError("QE identity signer has no CRL distribution point URL")


def _json_object(text: str, what: str) -> JsonObject:
    try:
        doc = json.loads(text)
    except ValueError:
        raise CollateralError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise CollateralError(f"{what} is not a JSON object")
    return doc


def _timestamp(value: object, what: str) -> float:
    if not isinstance(value, str):
        raise CollateralError(f"{what} missing")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CollateralError(f"{what} is not an ISO 8601 time") from None


def _signed_part(value: object, key: str) -> tuple[str, bytes]:
    """The exact signed text of ``key`` and its signature, from a PCS body given as text (the
    span is cut from the text: re-serialising could change the signed bytes) or as an
    already-parsed object (PcsClientTool files: rebuilt in Intel's compact form)."""
    if isinstance(value, dict):
        inner, signature = value.get(key), value.get("signature")
        if not isinstance(inner, dict) or not isinstance(signature, str):
            raise CollateralError(f"collateral lacks {key} or its signature")
        text = json.dumps(inner, separators=(",", ":"), ensure_ascii=False)
        return text, _hex(signature, f"{key} signature")
    if not isinstance(value, str):
        raise CollateralError(f"collateral {key} must be an object or JSON text")
    spans = _top_level_spans(value)
    if key not in spans or "signature" not in spans:
        raise CollateralError(f"collateral lacks {key} or its signature")
    signature = json.loads(spans["signature"])
    if not isinstance(signature, str) or not spans[key].startswith("{"):
        raise CollateralError(f"collateral {key} is malformed")
    return spans[key], _hex(signature, f"{key} signature")


def _top_level_spans(text: str) -> dict[str, str]:
    """Raw text of each member value of a top-level JSON object."""
    decoder = json.JSONDecoder()
    spans: dict[str, str] = {}

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    try:
        i = skip(0)
        if text[i] != "{":
            raise ValueError("not an object")
        i = skip(i + 1)
        while text[i] != "}":
            name, i = decoder.raw_decode(text, i)
            i = skip(i)
            if not isinstance(name, str) or text[i] != ":":
                raise ValueError("bad member")
            start = skip(i + 1)
            _, end = decoder.raw_decode(text, start)
            spans[name] = text[start:end]
            i = skip(end)
            if text[i] == ",":
                i = skip(i + 1)
            elif text[i] != "}":
                raise ValueError("bad separator")
        if skip(i + 1) != len(text):
            raise ValueError("trailing text")
    except (ValueError, IndexError):
        raise CollateralError("PCS response is not a JSON object") from None
    return spans
