"""The ``snp`` attester: an AMD SEV-SNP attestation report through configfs-tsm (``sev_guest``).

The report data (the binding digest) is zero-padded to 64 bytes and written as the ``inblob``;
the ``outblob`` is the 1184-byte ATTESTATION_REPORT (SEV-SNP Firmware ABI, AMD #56860) and the
``auxblob``, when the host supplied certificates, the extended-report certificate table
(GHCB spec: entries of a 16-byte GUID, u32 offset and u32 length, little-endian, offsets from
the table start, ended by an all-zero GUID).

Evidence, in upstream's form (guest-components' ``SnpEvidence``: the ``sev`` crate's serde
encoding of ``AttestationReport`` and of ``CertTableEntry``)::

    {"attestation_report": {"version": 3, "guest_svn": 0, "policy": <u64>,
                            "family_id": [16 ints], ..., "current_tcb": {"fmc": null,
                            "bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}, ...,
                            "signature": {"r": [72 ints], "s": [72 ints]}},
     "cert_chain": null | [{"cert_type": "VCEK" | "VLEK" | "ASK" | "ARK" | "CRL"
                                        | {"OTHER": "<uuid>"}, "data": [DER bytes as ints]}]}

The report's JSON form is written with the layout the broker reads
(:mod:`custodes.protocol.evidence.snp_report`): one table for both sides.

Unlike upstream's guest, which uses the ``SNP_GET_EXT_REPORT`` ioctl on ``/dev/sev-guest``,
this attester only uses configfs-tsm (Linux 6.7+). VMPL: the kernel's default privilege level
is 0, which the verifier requires; ``privlevel`` writes another one explicitly.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from typing import ClassVar, Final

from custodes.guest.attester.tsm import Tsm, TsmOutputInvalid, TsmProvider
from custodes.protocol.evidence import snp_report
from custodes.protocol.evidence.snp_report import REPORT_SIZE
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

# The GHCB certificate-table GUIDs the ``sev`` crate names; any other is {"OTHER": guid}.
CERT_GUIDS: Final[Mapping[uuid.UUID, str]] = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}
_TABLE_ENTRY: Final = struct.Struct("<16sII")


class SnpAttester:
    """Evidence from an SEV-SNP guest through configfs-tsm.

    ``tsm``: the configfs-tsm to use (default ``/sys/kernel/config/tsm``). ``privlevel``: the
    VMPL to request (the verifier accepts only 0, the kernel's default); ``None`` leaves it.
    """

    tee: ClassVar[Tee] = Tee.SNP

    def __init__(self, tsm: Tsm | None = None, *, privlevel: int | None = None) -> None:
        self._tsm = tsm if tsm is not None else Tsm()
        self._privlevel = privlevel

    def evidence(self, report_data: bytes) -> JsonObject:
        """The report for ``report_data`` (1..64 bytes, zero-padded) and its certificates."""
        report = self._tsm.report(
            report_data, provider=TsmProvider.SEV, privlevel=self._privlevel, auxblob=True
        )
        return {
            "attestation_report": report_to_json(report.outblob),
            "cert_chain": None if report.auxblob is None else cert_chain(report.auxblob),
        }


def report_to_json(raw: bytes) -> JsonObject:
    """The ``sev`` crate serde form of the TSM's 1184-byte ATTESTATION_REPORT (the layout the
    broker's verifier reads, :mod:`custodes.protocol.evidence.snp_report`)."""
    if len(raw) != REPORT_SIZE:
        raise TsmOutputInvalid(f"an SNP report is {REPORT_SIZE} bytes, the TSM gave {len(raw)}")
    return snp_report.report_to_json(raw)


def cert_chain(table: bytes) -> list[JsonObject] | None:
    """The ``cert_chain`` entries of an extended-report certificate table, in table order.

    ``None`` for a table with no entries (as the verifier reads an empty chain). A table with
    no terminating entry, or an entry pointing outside the table, is ``TsmOutputInvalid``.
    """
    entries: list[JsonObject] = []
    position = 0
    while True:
        if position + _TABLE_ENTRY.size > len(table):
            raise TsmOutputInvalid("the SNP certificate table has no terminating entry")
        guid_bytes, offset, length = _TABLE_ENTRY.unpack_from(table, position)
        position += _TABLE_ENTRY.size
        if guid_bytes == bytes(16):
            break
        if offset + length > len(table):
            raise TsmOutputInvalid("an SNP certificate table entry points outside the table")
        guid = uuid.UUID(bytes=guid_bytes)
        name = CERT_GUIDS.get(guid)
        entries.append(
            {
                "cert_type": name if name is not None else {"OTHER": str(guid)},
                "data": list(table[offset : offset + length]),
            }
        )
    return entries or None
