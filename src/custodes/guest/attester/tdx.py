"""The ``tdx`` attester: an Intel TDX quote through configfs-tsm (``tdx_guest``), with the CC
event log.

The report data (the binding digest) is zero-padded to 64 bytes and written as the ``inblob``;
the ``outblob`` is the TD quote, sent as the kernel returns it (real quotes come in a fixed-size
buffer with trailing zero bytes, which the verifier accepts).

Evidence, in upstream's form (guest-components' ``TdxEvidence``)::

    {"cc_eventlog": "<std base64>" | null, "quote": "<std base64 TD quote>"}

``cc_eventlog`` is the CC event log ACPI table data (``/sys/firmware/acpi/tables/data/CCEL``),
cut as upstream's guest cuts it: the firmware reserves a fixed-size area and fills its unused
tail with 0xFF (or zeros), so the log is walked event by event (TCG2 crypto-agile format) up to
the first u64 that is all ones or all zeros, the rest is dropped and 8 bytes 0xFF end the log.
``null`` when the table does not exist. Unlike upstream, a log that fills its area to the very
end (no end marker) is accepted as ending there, rather than refused. The AA event log
(runtime measurements) that upstream appends is not collected here.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import ClassVar, Final

from custodes._internal.b64 import b64std_encode
from custodes.errors import CustodesError
from custodes.guest.attester.tsm import Tsm, TsmOutputInvalid, TsmProvider
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

DEFAULT_CCEL_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")
EVENTLOG_END: Final = b"\xff" * 8
TDX_TEE_TYPE: Final = 0x81
_QUOTE_HEADER_SIZE: Final = 48
_EV_NO_ACTION: Final = 3
# TCG algorithm ids of the digests a CC event may carry, and their sizes (upstream's set).
DIGEST_SIZES: Final = {0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
_MAX_DIGESTS: Final = 8  # more than any bank count; stops a garbage count early
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")


class CcelError(CustodesError):
    """The CC event log ACPI table cannot be read or walked."""

    code = "ccel"


class TdxAttester:
    """Evidence from a TDX guest through configfs-tsm.

    ``tsm``: the configfs-tsm to use (default ``/sys/kernel/config/tsm``). ``ccel_path``: the
    CCEL table data (default ``/sys/firmware/acpi/tables/data/CCEL``); ``None`` sends no log.
    """

    tee: ClassVar[Tee] = Tee.TDX

    def __init__(
        self, tsm: Tsm | None = None, *, ccel_path: Path | None = DEFAULT_CCEL_PATH
    ) -> None:
        self._tsm = tsm if tsm is not None else Tsm()
        self._ccel_path = ccel_path

    def evidence(self, report_data: bytes) -> JsonObject:
        """The quote for ``report_data`` (1..64 bytes, zero-padded) and the event log."""
        report = self._tsm.report(report_data, provider=TsmProvider.TDX)
        check_quote_header(report.outblob)
        eventlog = self.eventlog()
        return {
            "cc_eventlog": None if eventlog is None else b64std_encode(eventlog),
            "quote": b64std_encode(report.outblob),
        }

    def eventlog(self) -> bytes | None:
        """The trimmed CCEL followed by the end marker, or ``None`` without a CCEL."""
        if self._ccel_path is None:
            return None
        try:
            ccel = self._ccel_path.read_bytes()
        except FileNotFoundError:
            logger.info("no CC event log at %s; sending the quote without one", self._ccel_path)
            return None
        except OSError as e:
            raise CcelError(f"cannot read the CC event log at {self._ccel_path}: {e}") from e
        return trim_ccel(ccel) + EVENTLOG_END


def check_quote_header(quote: bytes) -> None:
    """A TDX provider returns a TD quote: a 48-byte header with TEE type 0x81."""
    if len(quote) <= _QUOTE_HEADER_SIZE:
        raise TsmOutputInvalid(f"a {len(quote)}-byte outblob is not a TD quote")
    (tee_type,) = _U32.unpack_from(quote, 4)
    if tee_type != TDX_TEE_TYPE:
        raise TsmOutputInvalid(f"the outblob's TEE type is {tee_type:#x}, not TDX (0x81)")


def trim_ccel(ccel: bytes) -> bytes:
    """The events of a CCEL table, without the unused tail of its area.

    The first event is a SHA-1-format ``TCG_PCR_EVENT`` of type ``EV_NO_ACTION`` (the Spec ID
    event); each following ``TCG_PCR_EVENT2`` is u32 register, u32 type, u32 digest count,
    ``count`` x (u16 algorithm, digest), u32 size and the event data. The log ends before the
    first u64 that is all ones or all zeros (or a shorter such tail), or at the end of the
    buffer.
    """
    # TCG_PCR_EVENT: u32 register, u32 type, 20-byte SHA-1 digest, u32 size, data.
    event_type = _u32(ccel, 4, "first event type")
    if event_type != _EV_NO_ACTION:
        raise CcelError("the CC event log does not start with the Spec ID event")
    position = 28
    position += 4 + _u32(ccel, position, "Spec ID event size")
    if position > len(ccel):
        raise CcelError("the CC event log's Spec ID event runs past its end")
    while position < len(ccel):
        marker = ccel[position : position + 8]  # shorter at the very end of the buffer
        if marker in (EVENTLOG_END[: len(marker)], bytes(len(marker))):
            break
        position = _skip_event(ccel, position)
    return ccel[:position]


def _skip_event(ccel: bytes, position: int) -> int:
    """The offset after the ``TCG_PCR_EVENT2`` at ``position``."""
    count = _u32(ccel, position + 8, "digest count")
    if count > _MAX_DIGESTS:
        raise CcelError(f"a CC event claims {count} digests")
    position += 12
    for _ in range(count):
        if position + 2 > len(ccel):
            raise CcelError("the CC event log ends inside a digest")
        (algorithm,) = _U16.unpack_from(ccel, position)
        size = DIGEST_SIZES.get(algorithm)
        if size is None:
            raise CcelError(f"a CC event has a digest of unknown algorithm {algorithm:#06x}")
        position += 2 + size
    position += 4 + _u32(ccel, position, "event size")
    if position > len(ccel):
        raise CcelError("a CC event runs past the end of the log")
    return position


def _u32(data: bytes, position: int, what: str) -> int:
    if position + 4 > len(data):
        raise CcelError(f"the CC event log ends before the {what}")
    value: int = _U32.unpack_from(data, position)[0]
    return value
