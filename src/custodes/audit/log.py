"""The audit log: one append-only, hash-chained, signed stream of entries per tenant.

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

Storage: entry ``seq`` of stream ``s`` is the JCS bytes of the whole entry under namespace
``audit/<s>``, key ``seq`` as 12 digits (so key order is chain order). Each process has one
writer per stream (:class:`_StreamWriter`) that keeps the head in memory and commits the
entries of concurrent callers together (group commit: one transaction, one fsync, on a
:class:`~custodes.storage.batch.BatchStore`); a caller returns once its entry is durable.
Rows are create-only, so two writers (worker processes, or replicas on one database) can
never both write the same ``seq``: the loser re-reads the head, re-seals its batch and
retries with backoff, a bounded number of times. Two helper namespaces are derived data,
never trusted by verification: ``audit-head`` (key ``s``: a hint of the last ``seq``, so a
re-read of the head does not list the stream) and ``audit-index/<s>`` (key: a denial's
``correlation_id``, value: its ``seq``).

Events must be JSON and must never contain secret material (resource values, keys, tokens,
passwords): they are readable by the tenant's auditors and exported as plain text. Record
names, digests (hex) and decisions instead. ``bytes`` and :class:`~custodes.types.secret.Secret`
values are refused because they are not JSON.

Verification (:func:`verify_chain`, :func:`verify_jsonl`) is a numbered checklist per entry;
the report names the first bad entry and the error class says why. Entries removed from the
end leave a shorter chain that is still valid; signed checkpoints (:mod:`.checkpoint`) close
that gap: every export ends with one, and verification requires the stream to end at one
(``require_checkpoint``). An anchor ``expected_head=(seq, hash)`` recorded earlier (from
:meth:`AuditLog.head`) still detects a whole log rewritten by the key's holder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Final

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.clock import Clock
from custodes.audit.checkpoint import (
    Checkpoint,
    CheckpointPolicy,
    CheckpointReason,
    parse_checkpoint,
)
from custodes.audit.errors import (
    AuditAnchorMismatch,
    AuditAppendConflict,
    AuditChainError,
    AuditChainForked,
    AuditEmpty,
    AuditEntryEdited,
    AuditEntryMalformed,
    AuditEntryMissing,
    AuditEntryReordered,
    AuditEventInvalid,
    AuditSignatureInvalid,
    AuditStreamInvalid,
    AuditTailUncovered,
    AuditTimeReversed,
    AuditTruncated,
    AuditUnknownKey,
    AuditWrongStream,
)
from custodes.audit.group_commit import GroupCommit
from custodes.errors import ConfigError, StorageError
from custodes.storage.base import Store
from custodes.storage.batch import Batch, Row, batch_store
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

BROKER_STREAM: Final = "_broker"
"""The stream of broker-level events (tenant creation, operator actions)."""

NS_AUDIT_PREFIX: Final = "audit/"
NS_INDEX_PREFIX: Final = "audit-index/"
NS_HEAD: Final = "audit-head"

GENESIS_PREV: Final = "0" * 64
SEQ_DIGITS: Final = 12
MAX_SEQ: Final = 10**SEQ_DIGITS - 1
MAX_EVENT_BYTES: Final = 64 * 1024
MAX_ACTOR_CHARS: Final = 1024
MAX_KID_CHARS: Final = 128
MAX_LINE_BYTES: Final = 1024 * 1024
MAX_APPEND_ATTEMPTS: Final = 64
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
    """Written by the log itself (:mod:`.checkpoint`); :meth:`AuditLog.append` refuses it."""


# --- small codecs ---------------------------------------------------------------------------


def check_stream(stream: object) -> str:
    if not isinstance(stream, str) or not _STREAM_RE.fullmatch(stream):
        raise AuditStreamInvalid(
            f"audit stream {stream!r:.60} is not a tenant id or {BROKER_STREAM!r}"
        )
    return stream


def _seq_key(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def _key_seq(key: str) -> int:
    if len(key) != SEQ_DIGITS or not key.isascii() or not key.isdigit():
        raise AuditEntryMalformed(0, f"audit store key {key!r} is not a sequence number")
    return int(key)


def format_time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-02T03:04:05.678Z``."""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


def parse_time(text: object) -> int:
    """Milliseconds since the epoch of a time written by :func:`format_time`."""
    if not isinstance(text, str) or not _TIME_RE.fullmatch(text):
        raise ValueError(f"time {text!r:.40} is not RFC 3339 UTC with milliseconds")
    try:
        whole = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"time {text!r} is not a valid date and time") from e
    return int(whole.timestamp()) * 1000 + int(text[20:23])


def _canonical(obj: Json) -> bytes:
    data: bytes = rfc8785.dumps(obj)
    return data


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


def load_public_keys(paths: Iterable[Path]) -> dict[str, ec.EllipticCurvePublicKey]:
    """PEM public keys (P-256) by key id, for verification."""
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except OSError as e:
            raise ConfigError(f"cannot read public key {path}: {e.strerror}") from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: not a PEM public key") from e
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ConfigError(f"{path}: the audit key must be EC P-256")
        keys[key_id(key)] = key
    return keys


def parse_head(text: str) -> tuple[int, str]:
    """An anchor written as ``SEQ:HASH`` (decimal, 64 hex digits)."""
    seq_text, sep, hash_text = text.partition(":")
    if not sep or not seq_text.isascii() or not seq_text.isdigit() or len(seq_text) > SEQ_DIGITS:
        raise ConfigError(f"anchor {text!r} is not SEQ:HASH (e.g. 41:3fa2…, 64 hex digits)")
    digest = hash_text.lower()
    if not _HEX64_RE.fullmatch(digest):
        raise ConfigError(f"anchor hash {hash_text!r} is not 64 hex digits")
    return int(seq_text), digest


# --- entries --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry as stored: made by :func:`build_entry`, read by :meth:`from_json` (shape
    only; :func:`verify_chain` checks hash, signature and links)."""

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


def _event_copy(event: object) -> JsonObject:
    """A detached, canonicalisable copy of ``event``, or ``AuditEventInvalid``."""
    return _prepare_event(event)[0]


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
    """Hash and sign one entry (what :meth:`AuditLog.append` stores)."""
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


# --- verification ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying a chain.

    ``count`` is the number of entries verified good (all of them when ``ok``; those before
    the bad one otherwise) and ``head`` the ``(seq, hash)`` of the last good one. On failure
    ``first_bad_seq`` is the sequence number expected at the first bad position (everything
    before it verified) and ``error`` the :class:`AuditChainError` saying why. ``anchored``
    tells whether an ``expected_head`` was checked. ``checkpoints`` counts the checkpoints
    verified, ``checkpoint`` is the last of them, and ``complete`` says that the stream ends at
    it (no entry after it), i.e. that its end is covered by a signature.
    """

    ok: bool
    count: int
    first_seq: int | None
    head: tuple[int, str] | None
    anchored: bool
    first_bad_seq: int | None = None
    error: AuditChainError | None = None
    checkpoints: int = 0
    checkpoint: AuditEntry | None = None
    complete: bool = False

    @property
    def reason(self) -> str | None:
        return None if self.error is None else self.error.reason


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A line of an export that is not JSON; the verifier reports it in its place."""

    why: str


class _SeqGap(Exception):
    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"expected {expected}, found {found}")
        self.expected = expected
        self.found = found


class _ChainVerifier:
    def __init__(
        self,
        public_keys: Mapping[str, ec.EllipticCurvePublicKey],
        expected_head: tuple[int, str] | None,
        start_seq: int | None,
        stream: str | None,
        require_checkpoint: bool,
    ) -> None:
        for kid, key in public_keys.items():
            _require_p256(key, f"audit key {kid!r}")
        self._keys = dict(public_keys)
        self._anchor = expected_head
        self._start = start_seq
        self._stream = stream
        self._require_checkpoint = require_checkpoint
        self._first: AuditEntry | None = None
        self._last: AuditEntry | None = None
        self._checkpoint: AuditEntry | None = None
        self._checkpoints = 0
        self.count = 0

    @property
    def first_seq(self) -> int | None:
        return None if self._first is None else self._first.seq

    @property
    def expected_seq(self) -> int:
        if self._last is not None:
            return self._last.seq + 1
        return 0 if self._start is None else self._start

    def check(self, item: object) -> None:
        """Steps 1 to 10 for the next entry; raises the step's error."""
        expected = self.expected_seq
        if self._last is None and self._start is None:
            # A partial export of unknown start: its first entry sets where the chain starts.
            expected = _seq_of(item) or 0
        # 1. Shape: a JSON object with exactly the entry's members, each well-typed.
        if isinstance(item, _Unreadable):
            raise AuditEntryMalformed(expected, f"malformed entry: {item.why}")
        entry = AuditEntry.from_json(item, seq_hint=expected)
        first, last = self._first, self._last
        # 2. One stream: the one asked for, else the one the first entry names.
        stream = self._stream if self._stream is not None else (first or entry).stream
        if entry.stream != stream:
            raise AuditWrongStream(
                expected, f"entry of stream {entry.stream!r} inside stream {stream!r}"
            )
        # 3. Contiguous sequence numbers from the start.
        if entry.seq != expected:
            raise _SeqGap(expected, entry.seq)
        # 4. Content: the recorded hash is the hash of the canonical signed part.
        digest = hashlib.sha256(_canonical_or_malformed(entry)).digest()
        if not hmac.compare_digest(digest.hex(), entry.hash):
            raise AuditEntryEdited(
                entry.seq, "hash mismatch: the entry's content was changed after it was signed"
            )
        # 5. Key: one of the trusted audit keys.
        key = self._keys.get(entry.kid)
        if key is None:
            raise AuditUnknownKey(entry.seq, f"signed by unknown key {entry.kid!r}")
        # 6. Signature over the hash.
        if not _signature_ok(key, digest, entry.sig):
            raise AuditSignatureInvalid(
                entry.seq, f"the signature does not verify with key {entry.kid!r}"
            )
        # 7. Link: prev is the previous entry's hash (zeros for entry 0).
        if last is None:
            if entry.seq == 0 and entry.prev != GENESIS_PREV:
                raise AuditChainForked(0, "entry 0 does not start a chain (prev is not zero)")
        elif not hmac.compare_digest(entry.prev, last.hash):
            raise AuditChainForked(
                entry.seq,
                f"prev is not the hash of entry {last.seq}: an entry was replaced (chain forked)",
            )
        # 8. Time never goes backwards.
        if last is not None and entry.time_ms < last.time_ms:
            raise AuditTimeReversed(
                entry.seq, f"time goes backwards ({entry.time} before {last.time})"
            )
        # 9. A checkpoint: for this stream, and its size and head are those of the entries
        # before it (its signature is the entry's, checked in step 6).
        if entry.kind is AuditKind.CHECKPOINT:
            parse_checkpoint(seq=entry.seq, stream=stream, prev=entry.prev, event=entry.event)
            self._checkpoint = entry
            self._checkpoints += 1
        # 10. The anchor, where it falls inside the chain.
        if self._anchor is not None and entry.seq == self._anchor[0]:
            if not hmac.compare_digest(entry.hash, self._anchor[1]):
                raise AuditAnchorMismatch(
                    entry.seq,
                    f"entry {entry.seq} does not have the anchor's hash: the log was rewritten",
                )
        if first is None:
            self._first = entry
        self._last = entry
        self.count += 1

    def finish(self) -> None:
        """Steps 11 to 13, at the end of the stream."""
        self._finish_anchor()
        last = self._last
        # 12. Something to verify: an empty stream proves nothing, not even emptiness.
        if last is None:
            raise AuditEmpty(self.expected_seq, "no entries: an empty stream proves nothing")
        # 13. The end is signed: the last entry is a checkpoint, so a stream cut short is seen.
        if not self._require_checkpoint or last.kind is AuditKind.CHECKPOINT:
            return
        cp = self._checkpoint
        if cp is None:
            why = (
                f"no checkpoint: nothing signed says the stream ends at entry {last.seq}; "
                "entries cut from its end would go unnoticed"
            )
        else:
            after = (
                f"entry {last.seq} comes"
                if last.seq == cp.seq + 1
                else f"entries {cp.seq + 1}..{last.seq} come"
            )
            why = (
                f"{after} after the last checkpoint (entry {cp.seq}): the stream does not end "
                "at a checkpoint, so entries cut from its end would go unnoticed"
            )
        raise AuditTailUncovered(last.seq + 1, why)

    def _finish_anchor(self) -> None:
        """11. Entries missing at the end, against the anchor."""
        if self._anchor is None:
            return
        anchor_seq = self._anchor[0]
        first, last = self._first, self._last
        if first is not None and anchor_seq < first.seq:
            raise AuditAnchorMismatch(
                anchor_seq,
                f"the anchor names entry {anchor_seq}, before the first entry given "
                f"({first.seq}): cannot check it",
            )
        if last is None or anchor_seq > last.seq:
            start = self.expected_seq
            what = (
                f"entry {start} is" if start == anchor_seq else f"entries {start}..{anchor_seq} are"
            )
            raise AuditTruncated(
                start, f"{what} missing at the end: the log was truncated (anchor {anchor_seq})"
            )

    def report(self, failure: AuditChainError | None = None) -> VerifyReport:
        last = self._last
        return VerifyReport(
            ok=failure is None,
            count=self.count,
            first_seq=None if self._first is None else self._first.seq,
            head=None if last is None else (last.seq, last.hash),
            anchored=self._anchor is not None,
            first_bad_seq=None if failure is None else failure.seq,
            error=failure,
            checkpoints=self._checkpoints,
            checkpoint=self._checkpoint,
            complete=last is not None and last is self._checkpoint,
        )


def _canonical_or_malformed(entry: AuditEntry) -> bytes:
    try:
        return _canonical(entry.signed_part())
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise AuditEntryMalformed(entry.seq, f"malformed entry: event is not I-JSON ({e})") from e


def _seq_of(item: object) -> int | None:
    if isinstance(item, dict):
        seq = item.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    return None


def _check_anchor(expected_head: object) -> tuple[int, str] | None:
    if expected_head is None:
        return None
    if not isinstance(expected_head, tuple) or len(expected_head) != 2:
        raise ConfigError("the anchor must be a (seq, hash) pair")
    seq, digest = expected_head
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise ConfigError("the anchor's seq must be a sequence number")
    if not isinstance(digest, str) or not _HEX64_RE.fullmatch(digest.lower()):
        raise ConfigError("the anchor's hash must be 64 hex digits")
    return seq, digest.lower()


def _verify_items(
    items: Iterable[object],
    public_keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    expected_head: tuple[int, str] | None,
    start_seq: int | None,
    stream: str | None,
    require_checkpoint: bool,
) -> VerifyReport:
    if start_seq is not None and not 0 <= start_seq <= MAX_SEQ:
        raise ConfigError("the start must be a sequence number")
    if stream is not None:
        check_stream(stream)
    verifier = _ChainVerifier(
        public_keys, _check_anchor(expected_head), start_seq, stream, require_checkpoint
    )
    rest: Iterator[object] = iter(items)
    for item in rest:
        try:
            verifier.check(item)
        except _SeqGap as gap:
            if gap.found < gap.expected:
                first = verifier.first_seq
                if first is not None and gap.found < first:
                    # A partial export whose start came after this entry: it is the moved one.
                    at, why = gap.found, f"entry {gap.found} comes after entry {first}"
                else:
                    at, why = gap.expected, f"entry {gap.found} is where {gap.expected} belongs"
                return verifier.report(
                    AuditEntryReordered(at, f"{why}: entries reordered or duplicated")
                )
            # Deleted or moved? Only the entries after this one can tell.
            if any(_seq_of(later) == gap.expected for later in rest):
                return verifier.report(
                    AuditEntryReordered(
                        gap.expected,
                        f"entry {gap.found} is where entry {gap.expected} was expected, which "
                        "comes later: entries reordered",
                    )
                )
            missing = (
                f"entry {gap.expected} is"
                if gap.found == gap.expected + 1
                else f"entries {gap.expected}..{gap.found - 1} are"
            )
            return verifier.report(
                AuditEntryMissing(gap.expected, f"{missing} missing: deleted from the log")
            )
        except AuditChainError as e:
            return verifier.report(e)
    try:
        verifier.finish()
    except AuditChainError as e:
        return verifier.report(e)
    return verifier.report()


def verify_chain(
    entries: Sequence[JsonObject],
    public_keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    expected_head: tuple[int, str] | None = None,
    start_seq: int | None = 0,
    stream: str | None = None,
    require_checkpoint: bool = True,
) -> VerifyReport:
    """Verify entries (parsed JSON objects, in file order) against trusted keys by ``kid``.

    The first entry must be ``start_seq`` (0: a whole stream, so entries deleted at the start
    are found); a partial export (``AuditLog.export(since_seq=N)``) is verified with
    ``start_seq=N``, or ``None`` to start wherever it starts (``report.first_seq`` says
    where); its first entry's ``prev`` cannot be checked. ``stream``, when given, is the
    stream every entry must belong to (else the first entry's). ``expected_head`` is an
    anchor ``(seq, hash)`` recorded earlier: with it, entries missing at the end are detected,
    and so is a rewritten log whose entry ``seq`` differs. Every checkpoint met is checked,
    and with ``require_checkpoint`` (the default) the entries must end at one, so that entries
    cut from the end are detected without an anchor; ``False`` accepts an uncovered tail (the
    report's ``complete`` then says whether the end was covered). No entries at all is refused.
    """
    return _verify_items(
        entries,
        public_keys,
        expected_head=expected_head,
        start_seq=start_seq,
        stream=stream,
        require_checkpoint=require_checkpoint,
    )


def read_lines(fp: IO[bytes], *, max_line: int = MAX_LINE_BYTES) -> Iterator[object]:
    """Parse JSON Lines lazily: one JSON value per line, or an ``_Unreadable`` in its place.

    Blank lines are allowed only at the end of the file; reading stops at a line longer
    than ``max_line``.
    """
    number = 0
    blank_at: int | None = None
    while True:
        line = fp.readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line:
            yield _Unreadable(f"line {number} is longer than {max_line} bytes")
            return
        text = line.rstrip(b"\r\n")
        if not text.strip():
            blank_at = blank_at or number
            continue
        if blank_at is not None:
            yield _Unreadable(f"line {blank_at} is empty")
            return
        try:
            yield _loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            yield _Unreadable(f"line {number} is not JSON ({e})")


def verify_jsonl(
    fp: IO[bytes],
    public_keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    expected_head: tuple[int, str] | None = None,
    start_seq: int | None = 0,
    stream: str | None = None,
    require_checkpoint: bool = True,
) -> VerifyReport:
    """Verify an export (JSON Lines, one entry per line) as :func:`verify_chain`, streaming."""
    return _verify_items(
        read_lines(fp),
        public_keys,
        expected_head=expected_head,
        start_seq=start_seq,
        stream=stream,
        require_checkpoint=require_checkpoint,
    )


# --- the writer -----------------------------------------------------------------------------

_Maker = Callable[[AuditEntry | None], _Content | None]
"""What a caller appends, given the head it goes after (``None``: nothing to add)."""

# Backoff after a lost race (another process or replica appended first): exponential from
# 0.5 ms, capped at 20 ms, with full jitter, so that replicas that collided do not collide
# again in lockstep. Each retry re-signs the whole pending batch after the new head.
_BACKOFF_BASE_S: Final = 0.0005
_BACKOFF_CAP_S: Final = 0.02


def _backoff(attempt: int) -> float:
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * float(1 << min(attempt, 16)))
    return ceiling * secrets.randbelow(1001) / 1000


class _PartlyWritten(Exception):
    """Internal: a store without batches failed after the first ``written`` entries."""

    def __init__(self, written: int, error: StorageError) -> None:
        super().__init__(str(error))
        self.written = written
        self.error = error


@dataclass(frozen=True, slots=True)
class _Planned:
    entry: AuditEntry
    raw: bytes
    owner: int | None
    """Index of the caller the entry answers; ``None`` for a periodic checkpoint."""


@dataclass(slots=True)
class _Plan:
    outcomes: list[AuditEntry | BaseException | None]
    entries: list[_Planned] = field(default_factory=list)


class _StreamWriter:
    """The one writer of a stream in this process (group commit).

    Keeps the chain head in memory: an append reads nothing. The head is reloaded from the
    store only when it is unknown (first use, or a write whose outcome is unknown) or when a
    commit lost a race: another process or replica appended first; the pending batch is then
    re-sealed after the new head and retried with backoff. A caller returns only once its
    entry is committed, i.e. durable (the store's commit is).
    """

    def __init__(self, log: AuditLog, stream: str) -> None:
        self._log = log
        self._stream = stream
        self._head: AuditEntry | None = None
        self._loaded = False
        self._group: GroupCommit[_Maker, AuditEntry | None] = GroupCommit(self._commit)

    def submit(self, make: _Maker) -> AuditEntry | None:
        return self._group.submit(make)

    @property
    def commits(self) -> int:
        return self._group.commits

    def _commit(self, makers: Sequence[_Maker]) -> list[AuditEntry | BaseException | None]:
        log, stream = self._log, self._stream
        outcomes: list[AuditEntry | BaseException | None] = [None] * len(makers)
        pending = list(range(len(makers)))
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if not self._loaded:
                self._head = log._head_entry(stream)
                self._loaded = True
            plan = log._plan(stream, self._head, [makers[i] for i in pending])
            if not plan.entries:
                for slot, i in enumerate(pending):
                    outcomes[i] = plan.outcomes[slot]
                return outcomes
            failure: StorageError | None = None
            try:
                written = log._write(stream, plan.entries)
            except _PartlyWritten as e:
                written, failure = e.written, e.error
            except BaseException:
                self._loaded = False  # the outcome is unknown: read the head next time
                raise
            if written:
                self._head = plan.entries[written - 1].entry
                for planned in plan.entries[:written]:
                    if planned.entry.kind is AuditKind.CHECKPOINT:
                        log._checkpoint_ms[stream] = planned.entry.time_ms
            if written == len(plan.entries):
                for slot, i in enumerate(pending):
                    outcomes[i] = plan.outcomes[slot]
                return outcomes
            # Lost a race at entry ``written``: callers before it are done (the entries they
            # got are stored), the others are sealed again after the new head.
            owners = (p.owner for p in plan.entries[written:] if p.owner is not None)
            first_open = next(owners, len(pending))  # a lost periodic checkpoint owns none
            for slot in range(first_open):
                outcomes[pending[slot]] = plan.outcomes[slot]
            pending = pending[first_open:]
            self._loaded = False
            if failure is not None:
                # Entries before the failure are on record: their callers succeed (failing
                # them would refuse actions already recorded); the others fail.
                if plan.entries[written].owner is None:
                    logger.warning(
                        "audit stream %s: periodic checkpoint not written: %s", stream, failure
                    )
                for i in pending:
                    outcomes[i] = failure
                return outcomes
            if not pending:
                return outcomes
            time.sleep(_backoff(attempt))
        raise AuditAppendConflict(
            f"audit stream {stream!r}: no free sequence number after {MAX_APPEND_ATTEMPTS} attempts"
        )


# --- the log --------------------------------------------------------------------------------


class AuditLog:
    """Appends to and reads the audit streams kept in a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        signing_key: ec.EllipticCurvePrivateKey,
        clock: Clock,
        *,
        checkpoints: CheckpointPolicy | None = None,
    ) -> None:
        _require_p256(signing_key, "the audit signing key")
        self._store = store
        self._key = signing_key
        self._clock = clock
        self._policy = checkpoints if checkpoints is not None else CheckpointPolicy()
        self.kid = key_id(signing_key.public_key())
        self._kid_json = _json_string(self.kid)
        self._batches = batch_store(store)
        # One writer per stream: this process's appenders of a stream share its commits.
        self._writers: dict[str, _StreamWriter] = {}
        self._writers_lock = threading.Lock()
        # This process's latest checkpoint time per stream (ms), for the time rule only.
        self._checkpoint_ms: dict[str, int] = {}

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """The key map :func:`verify_chain` needs for entries written by this log."""
        return {self.kid: self._key.public_key()}

    # -- writing --

    def append(
        self, stream: str, kind: AuditKind | str, actor: str | None, event: JsonObject
    ) -> AuditEntry:
        """Append one entry; returns it, with its ``seq`` and ``hash``, once it is durable.

        ``event`` must be a JSON object (at most 64 KiB canonical) and must never contain
        secret material. A string ``correlation_id`` in it is indexed for
        :meth:`get_by_correlation_id`. Checkpoints are not appended here (:meth:`checkpoint`).
        Blocks the calling thread until the entry is committed; entries appended meanwhile by
        other threads share that commit (see :class:`_StreamWriter`).
        """
        check_stream(stream)
        if kind == AuditKind.CHECKPOINT:
            raise AuditEventInvalid("checkpoints are written by the audit log itself")
        # Checked and encoded here, in the caller's thread: a bad event fails its caller only.
        content = _content(kind, actor, event)
        entry = self._writer(stream).submit(lambda _head: content)
        if entry is None:  # pragma: no cover - the maker above always gives content
            raise AuditEventInvalid("nothing to append")
        return entry

    def checkpoint(
        self,
        stream: str,
        *,
        reason: CheckpointReason = CheckpointReason.EXPORT,
        actor: str | None = None,
    ) -> AuditEntry:
        """Append a signed checkpoint committing to every entry before it; returns it."""
        check_stream(stream)
        entry = self._writer(stream).submit(self._checkpoint_maker(stream, reason, actor))
        if entry is None:  # pragma: no cover - only periodic checkpoints are ever skipped
            raise AuditEventInvalid("no checkpoint was written")
        return entry

    def _checkpoint_maker(self, stream: str, reason: CheckpointReason, actor: str | None) -> _Maker:
        def make(head: AuditEntry | None) -> _Content | None:
            # A periodic checkpoint right after another one (a replica was faster) adds
            # nothing; an export's always gets its own, stamped with the export's time.
            if reason is not CheckpointReason.EXPORT and (
                head is None or head.kind is AuditKind.CHECKPOINT
            ):
                return None
            event = Checkpoint(
                origin=stream,
                size=0 if head is None else head.seq + 1,
                head=GENESIS_PREV if head is None else head.hash,
                reason=reason,
            ).to_event()
            return _content(AuditKind.CHECKPOINT, actor, event)

        return make

    def _writer(self, stream: str) -> _StreamWriter:
        with self._writers_lock:
            writer = self._writers.get(stream)
            if writer is None:
                writer = self._writers[stream] = _StreamWriter(self, stream)
            return writer

    def _plan(self, stream: str, head: AuditEntry | None, makers: Sequence[_Maker]) -> _Plan:
        """Seal the entries of ``makers`` after ``head``, with the periodic checkpoints that
        fall due among them. An entry that cannot be made fails its own caller only."""
        plan = _Plan(outcomes=[None] * len(makers))
        now_ms = int(self._clock.now() * 1000)
        last_ms = self._checkpoint_ms.setdefault(stream, now_ms)

        def add(content: _Content, owner: int | None) -> AuditEntry:
            nonlocal head
            entry, raw = _seal(
                content,
                seq=0 if head is None else head.seq + 1,
                # Never before the previous entry, whatever this clock says.
                time_ms=now_ms if head is None else max(now_ms, head.time_ms),
                stream=stream,
                prev=GENESIS_PREV if head is None else head.hash,
                kid=self.kid,
                kid_json=self._kid_json,
                signing_key=self._key,
            )
            plan.entries.append(_Planned(entry, raw, owner))
            head = entry
            return entry

        for index, make in enumerate(makers):
            try:
                content = make(head)
                if content is None:
                    continue
                entry = add(content, index)
            except AuditEventInvalid as e:  # e.g. a full stream: this caller's alone
                plan.outcomes[index] = e
                continue
            plan.outcomes[index] = entry
            if entry.kind is AuditKind.CHECKPOINT:
                last_ms = entry.time_ms
                continue
            reason = self._policy.due(seq=entry.seq, now_ms=now_ms, last_ms=last_ms)
            if reason is None:
                continue
            try:
                checkpoint = self._checkpoint_maker(stream, reason, None)(head)
                if checkpoint is not None:
                    last_ms = add(checkpoint, None).time_ms
            except AuditEventInvalid as e:
                # The entry itself is recorded: failing its caller would refuse an action
                # that is on record. The next rule, or the next export, writes the checkpoint.
                logger.warning("audit stream %s: periodic checkpoint not written: %s", stream, e)
        return plan

    def _write(self, stream: str, entries: Sequence[_Planned]) -> int:
        """Store ``entries`` (in chain order); how many of the first ones were stored. With a
        batch store that is all or none, in one transaction; otherwise one insert each."""
        ns = NS_AUDIT_PREFIX + stream
        now = self._clock.now()
        if self._batches is not None:
            index: dict[str, Row] = {}
            for planned in entries:
                cid = planned.entry.event.get(CORRELATION_ID_FIELD)
                if isinstance(cid, str) and cid not in index:
                    seq_text = str(planned.entry.seq).encode("ascii")
                    index[cid] = Row(NS_INDEX_PREFIX + stream, cid, seq_text)
            last = entries[-1].entry
            batch = Batch(
                inserts=tuple(Row(ns, _seq_key(p.entry.seq), p.raw) for p in entries),
                # Derived data, in the same commit: it costs nothing more there.
                upserts=(Row(NS_HEAD, stream, str(last.seq).encode("ascii")),),
                if_absent=tuple(index.values()),
            )
            return len(entries) if self._batches.write_batch(batch, now=now) else 0
        for written, planned in enumerate(entries):
            try:
                stored = self._store.insert(ns, _seq_key(planned.entry.seq), planned.raw, now=now)
            except StorageError as e:
                if written == 0:
                    raise
                raise _PartlyWritten(written, e) from e
            if not stored:
                return written
            self._after_append(planned.entry)
        return len(entries)

    def _after_append(self, entry: AuditEntry) -> None:
        # Derived data (stores without batches): a crash before these writes leaves a stale
        # hint (an append probes past it) or a missing index entry (rebuild_index restores it).
        self._store.set(NS_HEAD, entry.stream, str(entry.seq).encode("ascii"))
        cid = entry.event.get(CORRELATION_ID_FIELD)
        if isinstance(cid, str):
            self._store.insert(
                NS_INDEX_PREFIX + entry.stream,
                cid,
                str(entry.seq).encode("ascii"),
                now=self._clock.now(),
            )

    def _read(self, stream: str, seq: int) -> AuditEntry | None:
        raw = self._store.get(NS_AUDIT_PREFIX + stream, _seq_key(seq), now=self._clock.now())
        return None if raw is None else AuditEntry.from_bytes(raw, seq_hint=seq)

    def _head_entry(self, stream: str) -> AuditEntry | None:
        now = self._clock.now()
        ns = NS_AUDIT_PREFIX + stream
        seq: int | None = None
        hint = self._store.get(NS_HEAD, stream, now=now)
        if hint is not None and hint.isdigit() and len(hint) <= SEQ_DIGITS:
            seq = int(hint)
            if self._store.get(ns, _seq_key(seq), now=now) is None:
                seq = None
        if seq is None:
            keys = self._store.list(ns, now=now)
            if not keys:
                return None
            seq = _key_seq(keys[-1])
        # The hint may lag (a crash, a slower replica): walk forward to the real head.
        while self._store.get(ns, _seq_key(seq + 1), now=now) is not None:
            seq += 1
        return self._read(stream, seq)

    # -- reading --

    def head(self, stream: str) -> tuple[int, str] | None:
        """``(seq, hash)`` of the last entry: the anchor to record for later verification."""
        entry = self._head_entry(check_stream(stream))
        return None if entry is None else (entry.seq, entry.hash)

    def entry(self, stream: str, seq: int) -> AuditEntry | None:
        """Entry ``seq`` as stored (parsed, not verified), by key: no listing of the stream
        (the dashboard reads new entries one by one after the head it last saw)."""
        return self._read(check_stream(stream), seq)

    def _raw(self, stream: str, since_seq: int, limit: int | None) -> Iterator[tuple[int, bytes]]:
        ns = NS_AUDIT_PREFIX + check_stream(stream)
        now = self._clock.now()
        start = _seq_key(max(since_seq, 0))
        taken = 0
        for key in self._store.list(ns, now=now):
            if key < start:
                continue
            if limit is not None and taken >= limit:
                return
            raw = self._store.get(ns, key, now=now)
            if raw is not None:
                taken += 1
                yield _key_seq(key), raw

    def entries(
        self, stream: str, *, since_seq: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        """Stored entries in key order (parsed, not verified)."""
        return [
            AuditEntry.from_bytes(raw, seq_hint=seq)
            for seq, raw in self._raw(stream, since_seq, limit)
        ]

    def find(
        self,
        stream: str,
        predicate: Callable[[AuditEntry], bool],
        *,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries for which ``predicate`` holds, in chain order (a scan of the stream)."""
        found: list[AuditEntry] = []
        for entry in self.entries(stream):
            if predicate(entry):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def get_by_correlation_id(self, stream: str, correlation_id: str) -> AuditEntry | None:
        """The entry whose event carries this ``correlation_id``, through the index."""
        check_stream(stream)
        if not _valid_cid(correlation_id):
            return None
        raw = self._store.get(NS_INDEX_PREFIX + stream, correlation_id, now=self._clock.now())
        if raw is None or not raw.isdigit() or len(raw) > SEQ_DIGITS:
            return None
        entry = self._read(stream, int(raw))
        # The index is derived data: trust only an entry that carries the id itself.
        if entry is None or entry.event.get(CORRELATION_ID_FIELD) != correlation_id:
            return None
        return entry

    def rebuild_index(self, stream: str) -> int:
        """Re-add missing correlation-id index entries (after a crash); the number added."""
        added = 0
        for entry in self.entries(stream):
            cid = entry.event.get(CORRELATION_ID_FIELD)
            if isinstance(cid, str) and self._store.insert(
                NS_INDEX_PREFIX + stream,
                cid,
                str(entry.seq).encode("ascii"),
                now=self._clock.now(),
            ):
                added += 1
        return added

    def export(
        self,
        stream: str,
        fp: IO[bytes],
        *,
        since_seq: int = 0,
        checkpoint: bool = True,
        actor: str | None = None,
    ) -> int:
        """Write the stream as JSON Lines, the stored bytes verbatim; the number of lines.

        With ``checkpoint`` (the default) a checkpoint is appended first (``actor``: who
        exports) and the export stops at it, whatever other appenders add meanwhile, so the
        file ends with a signature over its own size and head.
        """
        end: int | None = None
        if checkpoint:
            end = self.checkpoint(stream, reason=CheckpointReason.EXPORT, actor=actor).seq
        count = 0
        for seq, raw in self._raw(stream, since_seq, None):
            if end is not None and seq > end:
                break
            fp.write(raw + b"\n")
            count += 1
        return count

    def verify_stream(
        self,
        stream: str,
        public_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None,
        *,
        expected_head: tuple[int, str] | None = None,
        require_checkpoint: bool = False,
    ) -> VerifyReport:
        """Verify the stored chain (this log's key unless ``public_keys`` is given).

        A live stream normally has entries after its latest checkpoint, so by default its end
        need not be one (``report.complete`` says whether it is); every checkpoint in it is
        still checked.
        """

        def items() -> Iterator[object]:
            for _, raw in self._raw(stream, 0, None):
                try:
                    yield _loads(raw)
                except (UnicodeDecodeError, ValueError, RecursionError) as e:
                    yield _Unreadable(f"stored value is not JSON ({e})")

        keys = self.public_keys() if public_keys is None else public_keys
        return _verify_items(
            items(),
            keys,
            expected_head=expected_head,
            start_seq=0,
            stream=check_stream(stream),
            require_checkpoint=require_checkpoint,
        )
