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
from custodes.errors import CustodesError, MalformedEvidence
from custodes.guest.attester.tsm import Tsm, TsmOutputInvalid, TsmProvider
from custodes.protocol.evidence.ccel import (
    EVENTLOG_END,
    Reader,
    at_end_marker,
    read_event,
    read_header_event,
)
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

DEFAULT_CCEL_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")
TDX_TEE_TYPE: Final = 0x81
_QUOTE_HEADER_SIZE: Final = 48
# TCG algorithm ids of the digests a CC event may carry, and their sizes (upstream's set).
DIGEST_SIZES: Final = {0x000B: 32, 0x000C: 48, 0x000D: 64, 0x0012: 32}
_MAX_DIGESTS: Final = 8  # more than any bank count; stops a garbage count early
_U32: Final = struct.Struct("<I")


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

    The events are framed as the broker's parser frames them
    (:mod:`custodes.protocol.evidence.ccel`); the Spec ID event is not decoded here, and every
    digest must be of an algorithm of upstream's set (:data:`DIGEST_SIZES`). The log ends
    before the first u64 that is all ones or all zeros (or a shorter such tail), or at the end
    of the buffer.
    """
    reader = Reader(ccel)
    try:
        read_header_event(reader)
        while reader.remaining and not at_end_marker(reader, short_tail=True):
            read_event(reader, DIGEST_SIZES, max_digests=_MAX_DIGESTS)
    except MalformedEvidence as e:
        raise CcelError(f"the CC event log cannot be walked: {e}") from e
    return ccel[: reader.position]
