"""The framing of a TCG2 crypto-agile event log, as the CC event log (CCEL) carries it: what
the TDX attester walks to cut the log out of its ACPI area, and what the verifiers' parser
(:mod:`custodes.attestation.eventlog.ccel`) reads before decoding each event.

Layout (TCG PC Client Platform Firmware Profile §10.2, UEFI 2.10 §38.4):

* the first event is a SHA-1-format ``TCG_PCR_EVENT`` of type ``EV_NO_ACTION``: u32 register,
  u32 type, 20-byte SHA-1 digest, u32 size, data (the ``Spec ID Event03`` structure);
* every following event is a ``TCG_PCR_EVENT2``: u32 register, u32 type, u32 digest count,
  ``count`` x (u16 algorithm id, digest), u32 event size, event data;
* the log ends at the end of the buffer or at a u64 that is all ones or all zeros: firmware
  fills the unused tail of the CCEL area with 0xFF, and the guest ends the log it sends with
  8 bytes 0xFF (:data:`EVENTLOG_END`).

Running past the end of the buffer is :class:`~custodes.errors.MalformedEvidence`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.errors import MalformedEvidence
from custodes.protocol.evidence.reader import Reader

__all__ = [
    "END_MARKERS",
    "EVENTLOG_END",
    "EV_NO_ACTION",
    "RawEvent",
    "Reader",
    "at_end_marker",
    "read_event",
    "read_header_event",
]

EV_NO_ACTION: Final = 0x3
EVENTLOG_END: Final = b"\xff" * 8
END_MARKERS: Final = (EVENTLOG_END, bytes(8))
SHA1_DIGEST_SIZE: Final = 20


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One ``TCG_PCR_EVENT2`` as framed: nothing decoded, nothing checked but its lengths."""

    index: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]  # (TCG algorithm id, digest)
    data: bytes


def read_header_event(reader: Reader) -> bytes:
    """The data of the SHA-1-format first event, which must be ``EV_NO_ACTION``."""
    reader.u32("header register index")
    if reader.u32("header event type") != EV_NO_ACTION:
        raise MalformedEvidence("event log: the first event is not EV_NO_ACTION")
    reader.take(SHA1_DIGEST_SIZE, "header digest")
    return reader.take(reader.u32("header size"), "header event")


def read_event(
    reader: Reader, digest_sizes: Mapping[int, int], *, max_digests: int | None = None
) -> RawEvent:
    """The ``TCG_PCR_EVENT2`` at the reader; each digest's size is that of its algorithm in
    ``digest_sizes`` (another algorithm is ``MalformedEvidence``)."""
    index = reader.u32("register index")
    event_type = reader.u32("event type")
    count = reader.u32("digest count")
    if max_digests is not None and count > max_digests:
        raise MalformedEvidence(f"event log: an event claims {count} digests")
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        algorithm = reader.u16("digest algorithm")
        size = digest_sizes.get(algorithm)
        if size is None:
            raise MalformedEvidence(f"event log: algorithm {algorithm:#06x} not declared")
        digests.append((algorithm, reader.take(size, "digest")))
    data = reader.take(reader.u32("event size"), "event data")
    return RawEvent(index, event_type, tuple(digests), data)


def at_end_marker(reader: Reader, *, short_tail: bool = False) -> bool:
    """The reader stands on an end marker. With ``short_tail``, a tail shorter than a marker
    that is all ones or all zeros counts as one (the end of a CCEL area)."""
    marker = reader.peek(len(EVENTLOG_END))
    if short_tail:
        return marker in (EVENTLOG_END[: len(marker)], bytes(len(marker)))
    return marker in END_MARKERS
