"""The one place that calls ``dcap_qvl`` (Intel DCAP quote verification, Rust core).

``dcap_qvl`` 0.7.0 ships no ``py.typed`` marker, so it is imported untyped here and every value
leaving this module is a plain typed Python value. Its errors are ``ValueError`` with a message;
:func:`classify_failure` maps them onto the shared error classes.

The PCK leaf's SGX extension depends only on the quote's PCK certificate chain, which is the
same for every quote of a platform: :func:`pck_info` keeps what it read in a bounded LRU keyed
by the chain's bytes (:data:`MAX_CACHED_PCK_CHAINS`). The quote itself is verified in full on
every call.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import dcap_qvl  # type: ignore[import-untyped]

from custodes.attestation.verifiers.tdx.errors import TcbRevoked
from custodes.errors import (
    ChainInvalid,
    CollateralError,
    EvidenceError,
    MalformedEvidence,
    SignatureInvalid,
    TcbError,
    VerificationError,
)
from custodes.types.json import JsonObject

MAX_CACHED_PCK_CHAINS: Final = 256


@dataclass(frozen=True, slots=True)
class PckInfo:
    """What the verifier needs from the PCK leaf certificate's SGX extension."""

    fmspc: str  # upper-case hex, as in TCB info
    ca: str  # "platform" or "processor"
    platform_instance_id: bytes | None  # Platform CA only
    sgx_type: int


@dataclass(frozen=True, slots=True)
class CurrentTcb:
    """The TD's *current* platform TCB level, which dcap-qvl evaluates from TEE_TCB_SVN2 of a
    TDX 1.5 quote: after a TD-preserving update of the TDX module it differs from the level
    the TD launched at (``QvlResult.status``). DCAP 1.27 reports it as ``*_current``."""

    status: str
    date: str | None  # RFC 3339, as in TCB info
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QvlResult:
    status: str  # dcap-qvl's combined TCB status (Intel's names: "UpToDate", …)
    advisory_ids: tuple[str, ...]
    claims: JsonObject  # dcap-qvl's claims JSON (TCB level, PCK fields, collateral dates)
    current: CurrentTcb | None = None  # TDX 1.5 quotes only


class PckInfoCache:
    """A bounded, thread-safe LRU of :class:`PckInfo` keyed by PCK chain bytes."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: OrderedDict[bytes, PckInfo] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, chain: bytes) -> PckInfo | None:
        with self._lock:
            info = self._entries.get(chain)
            if info is not None:
                self._entries.move_to_end(chain)
            return info

    def put(self, chain: bytes, info: PckInfo) -> None:
        with self._lock:
            self._entries[chain] = info
            self._entries.move_to_end(chain)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PCK_INFO_CACHE: Final = PckInfoCache(MAX_CACHED_PCK_CHAINS)


def pck_info(raw_quote: bytes, pck_chain: bytes | None = None) -> PckInfo:
    """Read the PCK leaf certificate embedded in a quote; ``MalformedEvidence`` if unusable.

    With ``pck_chain`` (the quote's own PCK chain bytes, which are all the answer depends on)
    the answer is looked up in, and kept in, :data:`PCK_INFO_CACHE`; failures are not kept."""
    if pck_chain is not None:
        cached = PCK_INFO_CACHE.get(pck_chain)
        if cached is not None:
            return cached
    info = _read_pck_info(raw_quote)
    if pck_chain is not None:
        PCK_INFO_CACHE.put(pck_chain, info)
    return info


def _read_pck_info(raw_quote: bytes) -> PckInfo:
    try:
        quote = dcap_qvl.parse_quote(raw_quote)
        ext = quote.pck_extension()
        fmspc = str(quote.fmspc()).upper()
        ca = str(quote.ca()).lower()
    except ValueError as e:
        raise MalformedEvidence("TDX quote: unreadable PCK certificate") from e
    if ext is None or ca not in ("platform", "processor"):
        raise MalformedEvidence("TDX quote: PCK certificate lacks the SGX extension")
    instance = ext.platform_instance_id
    return PckInfo(
        fmspc=fmspc,
        ca=ca,
        platform_instance_id=bytes(instance) if instance is not None else None,
        sgx_type=int(ext.sgx_type),
    )


def verify(
    raw_quote: bytes,
    *,
    pck_crl_issuer_chain: str,
    root_ca_crl: bytes,
    pck_crl: bytes,
    tcb_info_issuer_chain: str,
    tcb_info: str,
    tcb_info_signature: bytes,
    qe_identity_issuer_chain: str,
    qe_identity: str,
    qe_identity_signature: bytes,
    now: int,
    root_ca_der: bytes | None,
) -> QvlResult:
    """Verify the quote's signatures, PCK chain, CRLs and TCB level against the collateral at
    ``now``; the TCB status is returned, never judged here (``claims_only`` policy)."""
    collateral = dcap_qvl.QuoteCollateralV3(
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
    )
    verifier = dcap_qvl.QuoteVerifier(root_ca_der)
    try:
        claims = verifier.verify_with_policy(
            raw_quote, collateral, now, dcap_qvl.QuotePolicy.claims_only(now)
        )
    except ValueError as e:
        raise classify_failure(str(e)) from e
    parsed = json.loads(claims.to_json())
    tcb = parsed.get("tcb") or {}
    platform = parsed.get("platform")
    return QvlResult(
        status=str(tcb.get("status", "")),
        advisory_ids=tuple(str(a) for a in tcb.get("advisory_ids") or ()),
        claims=parsed,
        current=current_tcb(
            platform.get("current_tcb_level") if isinstance(platform, dict) else None
        ),
    )


def current_tcb(level: object) -> CurrentTcb | None:
    """dcap-qvl's ``platform.current_tcb_level`` (a TCB info level: ``tcbStatus``, ``tcbDate``,
    ``advisoryIDs``), or ``None`` when it has none (a TDX 1.0 quote). A level of another shape
    is refused rather than half read."""
    if level is None:
        return None
    status = level.get("tcbStatus") if isinstance(level, dict) else None
    if not isinstance(level, dict) or not isinstance(status, str):
        raise VerificationError("DCAP verification gave a current TCB level without a status")
    date = level.get("tcbDate")
    advisories = level.get("advisoryIDs") or []
    if not (date is None or isinstance(date, str)) or not (
        isinstance(advisories, list) and all(isinstance(a, str) for a in advisories)
    ):
        raise VerificationError("DCAP verification gave a malformed current TCB level")
    return CurrentTcb(status=status, date=date, advisory_ids=tuple(advisories))


# dcap-qvl message fragments -> error class, most specific first.
_FAILURES: tuple[tuple[str, type[EvidenceError]], ...] = (
    ("decode quote", MalformedEvidence),
    ("status is invalid: revoked", TcbRevoked),
    ("tcb status", TcbError),
    ("report signature is invalid", SignatureInvalid),
    ("invalid for qe_report", SignatureInvalid),
    ("qe report hash mismatch", SignatureInvalid),
    ("invalid for tcb_info", CollateralError),
    ("invalid for qe_identity", CollateralError),
    ("crl", CollateralError),
    ("expired", CollateralError),
    ("in the future", CollateralError),
    ("not yet valid", CollateralError),
    ("fmspc", CollateralError),
    ("tcb level", TcbError),
    ("revoked", ChainInvalid),
    ("certificate", ChainInvalid),
    ("chain", ChainInvalid),
)


def classify_failure(message: str) -> EvidenceError:
    """The error for a dcap-qvl failure message (``VerificationError`` when unrecognised)."""
    lowered = message.lower()
    for fragment, cls in _FAILURES:
        if fragment in lowered:
            return cls(f"DCAP verification failed: {message.splitlines()[0]}")
    return VerificationError(f"DCAP verification failed: {message.splitlines()[0]}")
