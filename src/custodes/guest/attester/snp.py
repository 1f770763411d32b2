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

Reserved report bytes are not part of that encoding (the ``sev`` crate drops them too); they
are zero in every report the firmware signs. The CPUID fields are ``null`` before report
version 3 and the mitigation vectors before version 5; a TCB carries ``fmc`` only on Turin
(family 0x1A), whose TCB_VERSION byte layout differs.

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
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

REPORT_SIZE: Final = 0x4A0  # 1184
TURIN_FAMILY: Final = 0x1A

# The GHCB certificate-table GUIDs the ``sev`` crate names; any other is {"OTHER": guid}.
CERT_GUIDS: Final[Mapping[uuid.UUID, str]] = {
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ARK",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ASK",
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "VCEK",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "VLEK",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "CRL",
}
_TABLE_ENTRY: Final = struct.Struct("<16sII")

# (serde name, offset, size) of the plain little-endian integers.
_INTS: Final = (
    ("version", 0x000, 4),
    ("guest_svn", 0x004, 4),
    ("policy", 0x008, 8),
    ("vmpl", 0x030, 4),
    ("sig_algo", 0x034, 4),
    ("plat_info", 0x040, 8),
    ("key_info", 0x048, 4),
)
# (serde name, offset, size) of the byte arrays, sent as arrays of ints.
_ARRAYS: Final = (
    ("family_id", 0x010, 16),
    ("image_id", 0x020, 16),
    ("report_data", 0x050, 64),
    ("measurement", 0x090, 48),
    ("host_data", 0x0C0, 32),
    ("id_key_digest", 0x0E0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("chip_id", 0x1A0, 64),
)
_TCBS: Final = (
    ("current_tcb", 0x038),
    ("reported_tcb", 0x180),
    ("committed_tcb", 0x1E0),
    ("launch_tcb", 0x1F0),
)
_CPUID: Final = (("cpuid_fam_id", 0x188), ("cpuid_mod_id", 0x189), ("cpuid_step", 0x18A))
_VERSIONS: Final = (("current", 0x1E8), ("committed", 0x1EC))  # build, minor, major bytes
_MIT_VECTORS: Final = (("launch_mit_vector", 0x1F8), ("current_mit_vector", 0x200))
_SIGNATURE_R: Final = 0x2A0
_SIGNATURE_S: Final = 0x2E8
_SIGNATURE_PART: Final = 72


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
    """The ``sev`` crate serde form of a 1184-byte ATTESTATION_REPORT."""
    if len(raw) != REPORT_SIZE:
        raise TsmOutputInvalid(f"an SNP report is {REPORT_SIZE} bytes, the TSM gave {len(raw)}")

    def uint(offset: int, size: int) -> int:
        return int.from_bytes(raw[offset : offset + size], "little")

    version = uint(0, 4)
    has_cpuid = version >= 3
    turin = has_cpuid and raw[0x188] == TURIN_FAMILY

    def tcb(offset: int) -> JsonObject:
        b = raw[offset : offset + 8]
        if turin:
            return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
        return {"fmc": None, "bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}

    def firmware_version(offset: int) -> JsonObject:
        return {"major": raw[offset + 2], "minor": raw[offset + 1], "build": raw[offset]}

    fields: JsonObject = {name: uint(offset, size) for name, offset, size in _INTS}
    fields |= {name: list(raw[offset : offset + size]) for name, offset, size in _ARRAYS}
    fields |= {name: tcb(offset) for name, offset in _TCBS}
    fields |= {name: raw[offset] if has_cpuid else None for name, offset in _CPUID}
    fields |= {name: firmware_version(offset) for name, offset in _VERSIONS}
    fields |= {name: uint(offset, 8) if version >= 5 else None for name, offset in _MIT_VECTORS}
    fields["signature"] = {
        "r": list(raw[_SIGNATURE_R : _SIGNATURE_R + _SIGNATURE_PART]),
        "s": list(raw[_SIGNATURE_S : _SIGNATURE_S + _SIGNATURE_PART]),
    }
    return {name: fields[name] for name in _SERDE_ORDER}


# The ``sev`` crate's field order (JSON objects are unordered, but logs and diffs read better).
_SERDE_ORDER: Final = (
    "version",
    "guest_svn",
    "policy",
    "family_id",
    "image_id",
    "vmpl",
    "sig_algo",
    "current_tcb",
    "plat_info",
    "key_info",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "reported_tcb",
    "cpuid_fam_id",
    "cpuid_mod_id",
    "cpuid_step",
    "chip_id",
    "committed_tcb",
    "current",
    "committed",
    "launch_tcb",
    "launch_mit_vector",
    "current_mit_vector",
    "signature",
)


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
