"""An audit entry: its codec, and building and sealing one (hash and signature).

An entry is a JSON object::

    {"seq": 7, "time": "2026-01-02T03:04:05.678Z", "stream": "acme", "kind": "release",
     "actor": "alice" | null, "event": {...}, "prev": "<hex>", "kid": "<key id>",
     "hash": "<hex>", "sig": "<base64url>"}

* ``hash`` is SHA-256 over the RFC 8785 (JCS) canonical JSON of the entry without ``hash``
  and ``sig`` (so ``kid`` is covered); ``prev`` is the ``hash`` of entry ``seq - 1`` (64
  zeros for entry 0), which chains every entry to all entries before it.
* ``sig`` is ES256 over those canonical bytes, i.e. ECDSA P-256 over the hash, encoded as in
  JWS (base64url of ``r || s``, 64 bytes). ``kid`` is the RFC 7638 thumbprint of the key.
* ``time`` is RFC 3339 UTC with milliseconds and never decreases along a chain: an appender
  whose clock is behind the previous entry's (another replica) records the previous time.

Events must be JSON and must never contain secret material (resource values, keys, tokens,
passwords): they are readable by the tenant's auditors and exported as plain text. Record
names, digests (hex) and decisions instead. ``bytes`` and :class:`~custodes.types.secret.Secret`
values are refused because they are not JSON.

Names with a leading underscore that :mod:`.verify` and :mod:`.log` import are internal to
the ``audit`` package: the one place each encoding decision is made.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from custodes._internal import jcs
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.audit.errors import (
    AuditEntryMalformed,
    AuditEventInvalid,
    AuditStreamInvalid,
)
from custodes.errors import ConfigError
from custodes.types.json import Json, JsonObject

BROKER_STREAM: Final = "_broker"
"""The stream of broker-level events (tenant creation, operator actions)."""

GENESIS_PREV: Final = "0" * 64
SEQ_DIGITS: Final = 12
MAX_SEQ: Final = 10**SEQ_DIGITS - 1
MAX_EVENT_BYTES: Final = 64 * 1024
MAX_ACTOR_CHARS: Final = 1024
MAX_KID_CHARS: Final = 128
CORRELATION_ID_FIELD: Final = "correlation_id"

_FIELDS: Final = frozenset(
    {"seq", "time", "stream", "kind", "actor", "event", "prev", "kid", "hash", "sig"}
)
# Tenant ids are DNS labels; "_broker" cannot be one. No "/": the stream is part of a namespace.
_STREAM_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_CID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_TIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_P256_BYTES: Final = 32
_SIG_BYTES: Final = 64
_ECDSA_PREHASHED: Final = ec.ECDSA(Prehashed(hashes.SHA256()))


class AuditKind(StrEnum):
    """What an entry records (the broker chooses; the log only keeps the set closed)."""

    ADMIN = "admin"
    ATTESTATION = "attestation"
    RELEASE = "release"
    DENIAL = "denial"
    TENANT = "tenant"
    CHECKPOINT = "checkpoint"
    """Written by the log itself (:mod:`.checkpoint`); :meth:`~.log.AuditLog.append` refuses it."""


# --- small codecs ---------------------------------------------------------------------------


def check_stream(stream: object) -> str:
    if not isinstance(stream, str) or not _STREAM_RE.fullmatch(stream):
        raise AuditStreamInvalid(
            f"audit stream {stream!r:.60} is not a tenant id or {BROKER_STREAM!r}"
        )
    return stream


def format_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


def parse_time(text: object) -> int:
    """Milliseconds since the epoch of a time written by :func:`format_time`."""
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise ValueError(f"time {text!r:.40} is not RFC 3339 UTC with milliseconds")
    try:
        # The pattern fixed the layout; fromisoformat checks the ranges (strptime is slow).
        whole = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"time {text!r} is not a valid date and time") from e
    return int(whole.timestamp()) * 1000 + int(text[20:23])


def _canonical(obj: Json) -> bytes:
    return jcs.dumps(obj)


def _reject_duplicates(pairs: list[tuple[str, Json]]) -> JsonObject:
    obj: JsonObject = {}
    for name, value in pairs:
        if name in obj:
            raise ValueError(f"duplicate member {name!r}")
        obj[name] = value
    return obj


def _reject_constant(name: str) -> Json:
    raise ValueError(f"non-JSON number {name}")


def _loads(raw: bytes) -> Json:
    """Strict JSON: UTF-8, no duplicate members (two parsers must not see two entries)."""
    return json.loads(
        raw.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
    )


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key."""
    numbers = key.public_numbers()
    members = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_P256_BYTES, "big")),
    }
    return b64url_encode(hashlib.sha256(_canonical(members)).digest())


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or not (
        isinstance(key.curve, ec.SECP256R1)
    ):
        raise ConfigError(f"{what} must be an EC P-256 key (audit entries are ES256)")


# --- entries --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry as stored: made by :func:`build_entry`, read by :meth:`from_json` (shape
    only; :func:`~.verify.verify_chain` checks hash, signature and links)."""

    seq: int
    time: str
    stream: str
    kind: AuditKind
    actor: str | None
    event: JsonObject
    prev: str
    kid: str
    hash: str
    sig: str

    def signed_part(self) -> JsonObject:
        """The members that ``hash`` covers (all but ``hash`` and ``sig``)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "stream": self.stream,
            "kind": str(self.kind),
            "actor": self.actor,
            "event": self.event,
            "prev": self.prev,
            "kid": self.kid,
        }

    def to_json(self) -> JsonObject:
        return {**self.signed_part(), "hash": self.hash, "sig": self.sig}

    def to_bytes(self) -> bytes:
        """The stored and exported form: JCS of the whole entry (one JSON Lines line)."""
        return _canonical(self.to_json())

    @property
    def time_ms(self) -> int:
        return parse_time(self.time)

    @classmethod
    def from_json(cls, obj: object, *, seq_hint: int = 0) -> AuditEntry:
        """Check the shape only (not hash or signature); ``AuditEntryMalformed`` otherwise.

        ``seq_hint`` is the sequence number an error names (the position being read).
        """

        def bad(why: str) -> AuditEntryMalformed:
            return AuditEntryMalformed(seq_hint, f"malformed entry: {why}")

        if not isinstance(obj, dict):
            raise bad("not a JSON object")
        if set(obj) != _FIELDS:
            missing = sorted(_FIELDS - set(obj))
            extra = sorted(set(obj) - _FIELDS)
            raise bad(f"missing members {missing}, unexpected members {extra}")
        seq = obj["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise bad("seq is not a sequence number")
        time_text = obj["time"]
        try:
            parse_time(time_text)
        except ValueError as e:
            raise bad(str(e)) from e
        stream = obj["stream"]
        if not isinstance(stream, str) or not _STREAM_RE.fullmatch(stream):
            raise bad("stream is not a stream name")
        try:
            kind = AuditKind(obj["kind"])
        except (ValueError, TypeError) as e:
            raise bad(f"kind {obj['kind']!r:.40} is unknown") from e
        actor = obj["actor"]
        if not _valid_actor(actor):
            raise bad("actor is neither null nor a subject")
        if not isinstance(obj["event"], dict):
            raise bad("event is not a JSON object")
        for name in ("prev", "hash"):
            if not isinstance(obj[name], str) or not _HEX64_RE.fullmatch(obj[name]):
                raise bad(f"{name} is not 64 lowercase hex digits")
        kid = obj["kid"]
        if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS:
            raise bad("kid is not a key id")
        sig = obj["sig"]
        try:
            if not isinstance(sig, str) or len(b64url_decode(sig)) != _SIG_BYTES:
                raise ValueError("length")
        except ValueError as e:
            raise bad("sig is not 64 bytes of unpadded base64url") from e
        return cls(
            seq=seq,
            time=time_text,
            stream=stream,
            kind=kind,
            actor=actor,
            event=obj["event"],
            prev=obj["prev"],
            kid=kid,
            hash=obj["hash"],
            sig=sig,
        )

    @classmethod
    def from_bytes(cls, raw: bytes, *, seq_hint: int = 0) -> AuditEntry:
        try:
            obj = _loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise AuditEntryMalformed(seq_hint, f"malformed entry: not JSON ({e})") from e
        return cls.from_json(obj, seq_hint=seq_hint)


def _valid_cid(value: object) -> bool:
    return isinstance(value, str) and _CID_RE.fullmatch(value) is not None


def _valid_actor(value: object) -> bool:
    return value is None or (isinstance(value, str) and 0 < len(value) <= MAX_ACTOR_CHARS)


def _sign(key: ec.EllipticCurvePrivateKey, digest: bytes) -> str:
    r, s = decode_dss_signature(key.sign(digest, _ECDSA_PREHASHED))
    return b64url_encode(r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big"))


def _signature_ok(key: ec.EllipticCurvePublicKey, digest: bytes, sig: str) -> bool:
    raw = b64url_decode(sig)
    r = int.from_bytes(raw[:_P256_BYTES], "big")
    s = int.from_bytes(raw[_P256_BYTES:], "big")
    try:
        key.verify(encode_dss_signature(r, s), digest, _ECDSA_PREHASHED)
    except InvalidSignature:
        return False
    return True


def _prepare_event(event: object) -> tuple[JsonObject, bytes]:
    """A detached copy of ``event`` and its JCS bytes (computed once per entry), or
    ``AuditEventInvalid``."""
    if not isinstance(event, dict):
        raise AuditEventInvalid("an audit event must be a JSON object")
    try:
        canonical = _canonical(event)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise AuditEventInvalid(f"the audit event is not JSON: {e}") from e
    if len(canonical) > MAX_EVENT_BYTES:
        raise AuditEventInvalid(
            f"the audit event is {len(canonical)} bytes, more than {MAX_EVENT_BYTES}; "
            "record digests rather than content"
        )
    copy: JsonObject = json.loads(canonical)
    cid = copy.get(CORRELATION_ID_FIELD)
    if cid is not None and not _valid_cid(cid):
        raise AuditEventInvalid(f"{CORRELATION_ID_FIELD} must match {_CID_RE.pattern}")
    return copy, canonical


# --- the canonical form of an entry, written directly -----------------------------------------
#
# An entry is an object whose members are known: JCS (RFC 8785) sorts them by name, and
# every member but ``event`` and ``actor`` is an ASCII string without characters JSON escapes
# (hex, base64url, digits, the stream's and kind's restricted alphabets) or an integer. So the
# entry's canonical bytes are a fixed frame around the event's JCS bytes (computed once, by
# rfc8785) and the actor's JSON string. The frame is checked equal to rfc8785's output of the
# whole entry by property tests (tests/unit/audit/test_entry_encoding.py); rfc8785 remains
# the only encoder verification uses.


def _json_string(text: str) -> bytes:
    """A JSON string as JCS writes it: Python's escaping with ``ensure_ascii=False`` is
    ECMAScript's (the short escapes of backspace, form feed, newline, return and tab, other
    controls as lowercase 6-character escapes, quote and backslash; nothing else). A lone
    surrogate has no UTF-8 form and raises."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class _Content:
    """What a caller appends, checked and encoded in its own thread before it is queued."""

    kind: AuditKind
    actor: str | None
    actor_json: bytes
    event: JsonObject
    event_json: bytes


def _content(kind: AuditKind | str, actor: str | None, event: object) -> _Content:
    try:
        kind = AuditKind(kind)
    except ValueError as e:
        raise AuditEventInvalid(f"audit kind {kind!r} is not one of {list(AuditKind)}") from e
    if not _valid_actor(actor):
        raise AuditEventInvalid("the actor must be a subject (1 to 1024 characters) or None")
    try:
        actor_json = b"null" if actor is None else _json_string(actor)
    except UnicodeEncodeError as e:
        raise AuditEventInvalid("the actor is not valid Unicode") from e
    copy, canonical = _prepare_event(event)
    return _Content(kind, actor, actor_json, copy, canonical)


def _frame(
    content: _Content, *, seq: int, time: str, stream: str, prev: str, kid_json: bytes
) -> tuple[bytes, bytes, bytes]:
    """The canonical bytes of the signed part, split where ``hash`` and ``sig`` go."""
    head = b'{"actor":' + content.actor_json + b',"event":' + content.event_json
    middle = (
        b',"kid":'
        + kid_json
        + b',"kind":"'
        + content.kind.value.encode("ascii")
        + b'","prev":"'
        + prev.encode("ascii")
        + b'","seq":'
        + str(seq).encode("ascii")
    )
    tail = b',"stream":"' + stream.encode("ascii") + b'","time":"' + time.encode("ascii") + b'"}'
    return head, middle, tail


def _seal(
    content: _Content,
    *,
    seq: int,
    time_ms: int,
    stream: str,
    prev: str,
    kid: str,
    kid_json: bytes,
    signing_key: ec.EllipticCurvePrivateKey,
) -> tuple[AuditEntry, bytes]:
    """Hash and sign one entry; the entry and its stored bytes (JCS of the whole entry)."""
    if not 0 <= seq <= MAX_SEQ:
        raise AuditEventInvalid(f"audit stream {stream!r} is full")
    time_text = format_time(time_ms)
    head, middle, tail = _frame(
        content, seq=seq, time=time_text, stream=stream, prev=prev, kid_json=kid_json
    )
    digest = hashlib.sha256(head + middle + tail).digest()
    digest_hex = digest.hex()
    sig = _sign(signing_key, digest)
    raw = (
        head
        + b',"hash":"'
        + digest_hex.encode("ascii")
        + b'"'
        + middle
        + b',"sig":"'
        + sig.encode("ascii")
        + b'"'
        + tail
    )
    entry = AuditEntry(
        seq=seq,
        time=time_text,
        stream=stream,
        kind=content.kind,
        actor=content.actor,
        event=content.event,
        prev=prev,
        kid=kid,
        hash=digest_hex,
        sig=sig,
    )
    return entry, raw


def build_entry(
    *,
    seq: int,
    time_ms: int,
    stream: str,
    kind: AuditKind | str,
    actor: str | None,
    event: JsonObject,
    prev: str,
    signing_key: ec.EllipticCurvePrivateKey,
) -> AuditEntry:
    """Hash and sign one entry (what :meth:`~.log.AuditLog.append` stores)."""
    _require_p256(signing_key, "the audit signing key")
    check_stream(stream)
    kid = key_id(signing_key.public_key())
    entry, _ = _seal(
        _content(kind, actor, event),
        seq=seq,
        time_ms=time_ms,
        stream=stream,
        prev=prev,
        kid=kid,
        kid_json=_json_string(kid),
        signing_key=signing_key,
    )
    return entry
