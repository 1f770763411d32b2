"""Verifying an audit chain: a numbered checklist per entry (:class:`_ChainVerifier`).

The report names the first bad entry and the error class says why. Entries removed from the
end leave a shorter chain that is still valid; signed checkpoints (:mod:`.checkpoint`) close
that gap: every export ends with one, and verification requires the stream to end at one
(``require_checkpoint``). An anchor ``expected_head=(seq, hash)`` recorded earlier (from
:meth:`~custodes.audit.log.AuditLog.head`) still detects a whole log rewritten by the key's
holder. Inputs: parsed entries (:func:`verify_chain`), an export in JSON Lines
(:func:`verify_jsonl`) or the stored bytes of a stream (:func:`verify_stream`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.audit.checkpoint import parse_checkpoint
from custodes.audit.entry import (
    _HEX64_RE,
    GENESIS_PREV,
    MAX_SEQ,
    SEQ_DIGITS,
    AuditEntry,
    AuditKind,
    _canonical,
    _loads,
    _require_p256,
    _signature_ok,
    check_stream,
    key_id,
)
from custodes.audit.errors import (
    AuditAnchorMismatch,
    AuditChainError,
    AuditChainForked,
    AuditEmpty,
    AuditEntryEdited,
    AuditEntryMalformed,
    AuditEntryMissing,
    AuditEntryReordered,
    AuditSignatureInvalid,
    AuditTailUncovered,
    AuditTimeReversed,
    AuditTruncated,
    AuditUnknownKey,
    AuditWrongStream,
)
from custodes.errors import ConfigError
from custodes.types.json import JsonObject

MAX_LINE_BYTES: Final = 1024 * 1024


# --- trusted keys and anchors ----------------------------------------------------------------


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


def verify_stream(
    stored: Iterable[bytes],
    public_keys: Mapping[str, ec.EllipticCurvePublicKey],
    *,
    stream: str,
    expected_head: tuple[int, str] | None = None,
    require_checkpoint: bool = False,
) -> VerifyReport:
    """Verify the stored bytes of a whole ``stream`` (in key order) as :func:`verify_chain`.

    A live stream normally has entries after its latest checkpoint, so by default its end
    need not be one (``report.complete`` says whether it is); every checkpoint in it is
    still checked.
    """

    def items() -> Iterator[object]:
        for raw in stored:
            try:
                yield _loads(raw)
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                yield _Unreadable(f"stored value is not JSON ({e})")

    return _verify_items(
        items(),
        public_keys,
        expected_head=expected_head,
        start_seq=0,
        stream=check_stream(stream),
        require_checkpoint=require_checkpoint,
    )
