"""TCG2 crypto-agile event logs: the CC event log (CCEL) and the AA event-log entries appended
to it, parsed into frozen entries and replayed into measurement registers.

Layout (TCG PC Client Platform Firmware Profile §10.2, UEFI 2.10 §38.4; the framing, which
the guest's TDX attester walks too, is :mod:`custodes.protocol.evidence.ccel`):

* The first event is a SHA-1-format ``TCG_PCR_EVENT`` of type ``EV_NO_ACTION`` carrying the
  ``Spec ID Event03`` structure, which declares the digest algorithms and their sizes.
* Every following event is a ``TCG_PCR_EVENT2``: u32 register index, u32 event type, u32 digest
  count, ``count`` x (u16 algorithm id, digest of the declared size), u32 event size, event data.
* The log ends at the end of the buffer or at a u64 that is all ones or all zeros. Firmware
  reserves a fixed-size area for the CCEL and fills the unused tail with 0xFF; the guest's
  attester appends AAEL entries and ends the whole log with 8 bytes 0xFF. Bytes after the end
  marker are therefore not part of the log and are ignored.

``CcEventLog.to_json()`` produces exactly upstream's ``uefi_event_logs`` claim (entry fields
``details``, ``digest_matches_event``, ``digests``, ``event``, ``index``, ``type_name``),
including upstream's per-event-type ``details`` decoding, so that upstream's policies (which
look up e.g. ``File(kernel)`` device paths and ``LOADED_IMAGE::LoadOptions`` tags) work
unchanged.

Replay extends every digest of the chosen algorithm for a register, in log order, starting
from zeros: ``MR = H(MR ‖ digest)``. ``EV_NO_ACTION`` events are informational and are never
extended by firmware, so replay skips them (upstream extends them too; no real log puts one in
a replayed register, and skipping is what the hardware does).

Every parse failure raises :class:`custodes.errors.MalformedEvidence`.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes

from custodes.errors import MalformedEvidence
from custodes.protocol.evidence.ccel import EV_NO_ACTION as EV_NO_ACTION  # its users read it here
from custodes.protocol.evidence.ccel import (
    EVENTLOG_END,
    Reader,
    at_end_marker,
    read_event,
    read_header_event,
)
from custodes.types.json import Json, JsonObject

# --- algorithms and event types ----------------------------------------------------------

ALG_SHA1: Final = 0x0004
ALG_SHA256: Final = 0x000B
ALG_SHA384: Final = 0x000C
ALG_SHA512: Final = 0x000D
ALG_SM3_256: Final = 0x0012

# TCG algorithm id -> (name in upstream's claims, digest size, hash constructor).
_ALGORITHMS: Final[Mapping[int, tuple[str, int, Callable[[], hashes.HashAlgorithm]]]] = {
    ALG_SHA1: ("SHA-1", 20, hashes.SHA1),
    ALG_SHA256: ("SHA-256", 32, hashes.SHA256),
    ALG_SHA384: ("SHA-384", 48, hashes.SHA384),
    ALG_SHA512: ("SHA-512", 64, hashes.SHA512),
    ALG_SM3_256: ("SM3", 32, hashes.SM3),
}

EV_SEPARATOR: Final = 0x4
EV_EVENT_TAG: Final = 0x6
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003

EVENT_TYPE_NAMES: Final[Mapping[int, str]] = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}

_SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"
_AAEL_TAG_ID: Final = 0x4141454C  # "AAEL" read as a little-endian u32


def algorithm_name(algorithm: int) -> str:
    """Upstream's name for a TCG algorithm id (``SHA-384`` …)."""
    try:
        return _ALGORITHMS[algorithm][0]
    except KeyError:
        raise MalformedEvidence(f"unsupported digest algorithm {algorithm:#06x}") from None


def digest_size(algorithm: int) -> int:
    """Digest size in bytes of a supported TCG algorithm."""
    try:
        return _ALGORITHMS[algorithm][1]
    except KeyError:
        raise MalformedEvidence(f"unsupported digest algorithm {algorithm:#06x}") from None


def _hash(algorithm: int, *parts: bytes) -> bytes:
    ctx = hashes.Hash(_ALGORITHMS[algorithm][2]())
    for part in parts:
        ctx.update(part)
    return ctx.finalize()


# --- parsed values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventDigest:
    algorithm: int
    digest: bytes

    def to_json(self) -> JsonObject:
        return {"alg": algorithm_name(self.algorithm), "digest": self.digest.hex()}


@dataclass(frozen=True, slots=True)
class EventDetails:
    """Upstream's decoded view of an event's data; absent fields are left out of the JSON."""

    string: str | None = None
    unicode_name: str | None = None
    unicode_name_length: int | None = None
    variable_data: str | None = None
    variable_data_length: int | None = None
    variable_name: str | None = None
    device_paths: tuple[str, ...] | None = None
    data: Json = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        for name in (
            "string",
            "unicode_name",
            "unicode_name_length",
            "variable_data",
            "variable_data_length",
            "variable_name",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.device_paths is not None:
            out["device_paths"] = list(self.device_paths)
        if self.data is not None:
            out["data"] = copy.deepcopy(self.data)
        return out


@dataclass(frozen=True, slots=True)
class EventLogEntry:
    index: int  # CC measurement register index (TDX: 0 = MRTD, 1..4 = RTMR0..3)
    event_type: int
    digests: tuple[EventDigest, ...]
    event: bytes
    details: EventDetails
    digest_matches_event: bool  # every digest is the hash of ``event`` itself

    @property
    def type_name(self) -> str:
        return EVENT_TYPE_NAMES[self.event_type]

    def to_json(self) -> JsonObject:
        return {
            "details": self.details.to_json(),
            "digest_matches_event": self.digest_matches_event,
            "digests": [d.to_json() for d in self.digests],
            "event": base64.b64encode(self.event).decode("ascii"),
            "index": self.index,
            "type_name": self.type_name,
        }


@dataclass(frozen=True, slots=True)
class CcEventLog:
    """A parsed TCG2 crypto-agile event log (the Spec ID header is not an entry)."""

    digest_sizes: Mapping[int, int] = field(repr=False)
    entries: tuple[EventLogEntry, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> CcEventLog:
        reader = Reader(data)
        sizes = _parse_spec_id_event(reader)
        entries: list[EventLogEntry] = []
        while reader.remaining:
            if reader.remaining < len(EVENTLOG_END):
                raise MalformedEvidence("event log: truncated entry")
            if at_end_marker(reader):
                break
            entries.append(_parse_entry(reader, sizes))
        return cls(digest_sizes=dict(sizes), entries=tuple(entries))

    def replay(self, index: int, algorithm: int = ALG_SHA384) -> bytes:
        """The value of register ``index`` after extending, from zeros, every ``algorithm``
        digest logged for it (``EV_NO_ACTION`` events excluded)."""
        size = digest_size(algorithm)
        value = bytes(size)
        for entry in self.entries:
            if entry.index != index or entry.event_type == EV_NO_ACTION:
                continue
            for d in entry.digests:
                if d.algorithm == algorithm:
                    value = _hash(algorithm, value, d.digest)
        return value

    def to_json(self) -> list[JsonObject]:
        """Upstream's ``uefi_event_logs`` claim."""
        return [entry.to_json() for entry in self.entries]


# --- log structure -----------------------------------------------------------------------


def _parse_spec_id_event(reader: Reader) -> dict[int, int]:
    body = Reader(read_header_event(reader))
    if body.take(16, "Spec ID signature") != _SPEC_ID_SIGNATURE:
        raise MalformedEvidence("event log: the first event is not a Spec ID Event03")
    body.take(4 + 4, "Spec ID platform class and version")  # class, minor, major, errata, uintn
    count = body.u32("Spec ID algorithm count")
    sizes: dict[int, int] = {}
    for _ in range(count):
        algorithm, size = body.u16("Spec ID algorithm"), body.u16("Spec ID digest size")
        if size != digest_size(algorithm):
            raise MalformedEvidence(f"event log: wrong digest size for {algorithm:#06x}")
        sizes[algorithm] = size
    body.take(body.u8("Spec ID vendor size"), "Spec ID vendor info")
    if body.remaining:
        raise MalformedEvidence("event log: trailing bytes in the Spec ID event")
    if not sizes:
        raise MalformedEvidence("event log: the Spec ID event declares no algorithm")
    return sizes


def _parse_entry(reader: Reader, sizes: Mapping[int, int]) -> EventLogEntry:
    raw = read_event(reader, sizes)
    index, event_type, event = raw.index, raw.event_type, raw.data
    if event_type not in EVENT_TYPE_NAMES:
        raise MalformedEvidence(f"event log: unknown event type {event_type:#x}")
    digests = [EventDigest(algorithm, digest) for algorithm, digest in raw.digests]
    try:
        details = _DETAIL_PARSERS.get(event_type, _blank)(event)
    except (ValueError, IndexError, struct.error) as e:
        # UnicodeDecodeError is a ValueError; the decoders below index only checked ranges.
        name = EVENT_TYPE_NAMES[event_type]
        raise MalformedEvidence(f"event log: undecodable {name} event data") from e
    return EventLogEntry(
        index=index,
        event_type=event_type,
        digests=tuple(digests),
        event=event,
        details=details,
        digest_matches_event=all(_hash(d.algorithm, event) == d.digest for d in digests),
    )


# --- event data decoders (upstream's ``details``) ----------------------------------------


def _blank(_data: bytes) -> EventDetails:
    return EventDetails()


def _utf8_string(data: bytes) -> EventDetails:
    return EventDetails(string=data.decode("utf-8"))


def _description_string(data: bytes) -> EventDetails:
    # UEFI_PLATFORM_FIRMWARE_BLOB2 / UEFI_HANDOFF_TABLE_POINTERS2: u8 size, then the
    # description whose last byte (the NUL) upstream leaves out.
    if not data:
        raise ValueError("empty description event")
    size = data[0]
    if len(data) < size:
        raise ValueError("description longer than the event")
    return EventDetails(string=data[1:size].decode("utf-8"))


def _platform_config_flags(data: bytes) -> EventDetails:
    # Vendor-defined; upstream shows it as text when it is UTF-8 (else ""), DLE as a space,
    # and control characters removed.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    text = text.replace("\x10", " ")
    return EventDetails(string="".join(c for c in text if unicodedata.category(c) != "Cc"))


def _ipl(data: bytes) -> EventDetails:
    if len(data) < 2:
        raise ValueError("EV_IPL shorter than 2 bytes")
    if data[:2] == b".\x00":
        # Google's shim logs ".\0" then a NUL-terminated UTF-16 string.
        rest = len(data) - 2
        if rest == 0 or rest % 2:
            raise ValueError("EV_IPL is not UTF-16")
        return EventDetails(string=data[2 : len(data) - 2].decode("utf-16-le", "replace"))
    # A NUL-terminated string (grub adds a second NUL to some commands).
    return EventDetails(string=data[:-1].decode("utf-8").rstrip("\x00"))


def _efi_variable(data: bytes) -> EventDetails:
    # UEFI_VARIABLE_DATA: GUID, u64 name length (chars), u64 data length, UTF-16 name, data.
    if len(data) < 32:
        raise ValueError("UEFI_VARIABLE_DATA header truncated")
    guid = data[:16]
    name_len, data_len = struct.unpack_from("<QQ", data, 16)
    name_end = 32 + 2 * name_len
    if name_end > len(data) or name_end + data_len > len(data):
        raise ValueError("UEFI_VARIABLE_DATA truncated")
    return EventDetails(
        unicode_name=data[32:name_end].decode("utf-16-le"),
        unicode_name_length=name_len,
        variable_data=base64.b64encode(data[name_end : name_end + data_len]).decode("ascii"),
        variable_data_length=data_len,
        # Upstream prints the GUID's bytes in stored order, not the mixed-endian text form.
        variable_name="-".join(
            guid[a:b].hex() for a, b in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 16))
        ),
    )


def _event_tag(data: bytes) -> EventDetails:
    # TCG_PCClientTaggedEvent: u32 tag id, u32 size, data.
    if len(data) < 8:
        raise ValueError("tagged event header truncated")
    tag_id, size = struct.unpack_from("<II", data, 0)
    if 8 + size > len(data):
        raise ValueError("tagged event truncated")
    tagged = data[8 : 8 + size]
    text = tagged.decode("utf-8", "replace").replace("\x00", "")
    if tag_id != _AAEL_TAG_ID:
        return EventDetails(string=text)
    # AA event log entry: "<domain> <operation> <content>", content JSON when it parses.
    domain, operation, content = tagged.decode("utf-8").split(" ", 2)
    try:
        parsed: Json = json.loads(content, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep for json
        parsed = content
    return EventDetails(
        string=text,
        unicode_name="AAEL",
        data={"content": parsed, "domain": domain, "operation": operation},
    )


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python accepts, JSON does not


def _boot_services_application(data: bytes) -> EventDetails:
    # UEFI_IMAGE_LOAD_EVENT: u64 location, u64 length, u64 link address, u64 device path
    # length, device path (ending with a 4-byte End node, which is not shown).
    if len(data) < 32:
        raise ValueError("UEFI_IMAGE_LOAD_EVENT truncated")
    (path_len,) = struct.unpack_from("<Q", data, 24)
    if path_len == 0:
        return EventDetails()
    if path_len < 4 or 32 + path_len - 4 > len(data):
        raise ValueError("device path length out of range")
    path = data[32 : 32 + path_len - 4]
    nodes: list[str] = []
    pos = 0
    while pos < len(path) or not nodes:
        if len(path) - pos < 4:
            raise ValueError("device path node truncated")
        node_type, sub_type, node_len = struct.unpack_from("<BBH", path, pos)
        if node_len < 4 or pos + node_len > len(path):
            raise ValueError("device path node length out of range")
        nodes.append(_device_path_node(node_type, sub_type, path[pos + 4 : pos + node_len]))
        pos += node_len
    return EventDetails(device_paths=tuple(nodes))


_DETAIL_PARSERS: Final[Mapping[int, Callable[[bytes], EventDetails]]] = {
    0x1: _utf8_string,  # EV_POST_CODE
    0x5: _utf8_string,  # EV_ACTION
    0x6: _event_tag,
    0xA: _platform_config_flags,
    0xC: _utf8_string,  # EV_COMPACT_HASH
    0xD: _ipl,
    0x12: _utf8_string,  # EV_OMIT_BOOT_DEVICE_EVENTS
    0x80000001: _efi_variable,  # EV_EFI_VARIABLE_DRIVER_CONFIG
    0x80000002: _efi_variable,  # EV_EFI_VARIABLE_BOOT
    0x80000003: _boot_services_application,
    0x80000007: _utf8_string,  # EV_EFI_ACTION
    0x8000000A: _description_string,  # EV_EFI_PLATFORM_FIRMWARE_BLOB2
    0x8000000B: _description_string,  # EV_EFI_HANDOFF_TABLES2
    0x8000000C: _efi_variable,  # EV_EFI_VARIABLE_BOOT2
    0x800000E0: _efi_variable,  # EV_EFI_VARIABLE_AUTHORITY
}


# --- UEFI device path text (UEFI 2.10 §10.6.1, as upstream renders it) ---------------------


def _device_path_node(node_type: int, sub_type: int, data: bytes) -> str:
    """Text of one device path node; nodes upstream does not decode (or cannot, being too
    short) print generically as ``Path(type,subtype,hex)``."""
    try:
        text = _NODE_FORMATTERS[(node_type, sub_type)](data)
    except (KeyError, ValueError, IndexError, struct.error):
        text = None
    return text if text is not None else f"Path({node_type},{sub_type},{data.hex()})"


def _uefi_guid(raw: bytes) -> str:
    d1, d2, d3 = struct.unpack_from("<IHH", raw, 0)
    return f"{d1:08X}-{d2:04X}-{d3:04X}-{raw[8:10].hex().upper()}-{raw[10:16].hex().upper()}"


def _pci(data: bytes) -> str | None:
    if len(data) < 2:
        return None
    return f"Pci({data[0]},{data[1]})"  # upstream prints function, then device


def _acpi(data: bytes) -> str | None:
    if len(data) < 8:
        return None
    hid, uid = struct.unpack_from("<II", data, 0)
    vendor = hid & 0xFFFF  # compressed EISA id: three 5-bit letters
    letters = "".join(chr(((vendor >> shift) & 0x1F) + 0x40) for shift in (10, 5, 0))
    return f"ACPI({letters}{hid >> 16:04X},{uid})"


def _fibre_ex(data: bytes) -> str | None:
    if len(data) < 16:
        return None
    return f"FibreEx(0x{data[0:8].hex()},0x{data[8:16].hex()})"


def _usb(data: bytes) -> str | None:
    if len(data) < 2:
        return None
    return f"USB({data[0]},{data[1]})"


def _mac(data: bytes) -> str | None:
    if len(data) < 33:
        return None
    return f"Mac({data[0:31].hex().rstrip('0').upper()},0x{data[32]:02X})"


def _ipv4(data: bytes) -> str | None:
    if len(data) < 23:
        return None
    local, remote = data[0:4], data[4:8]
    (protocol,) = struct.unpack_from("<H", data, 12)
    gateway, mask = struct.unpack_from("<II", data, 15)

    def dotted(raw: bytes) -> str:  # upstream reads the address as a little-endian u32
        return ".".join(str(b) for b in reversed(raw))

    proto = {6: "TCP", 17: "UDP"}.get(protocol, "")
    origin = {0: "DHCP", 1: "Static"}.get(data[14], "")
    extra = f",{gateway},{mask}" if gateway or mask else ""
    return f"IPv4({dotted(remote)},{proto},{origin},{dotted(local)}{extra})"


def _hard_drive(data: bytes) -> str | None:
    if len(data) < 38:
        return None
    number, start, size = struct.unpack_from("<IQQ", data, 0)
    signature, fmt = data[20:36], data[36]
    if fmt == 1:
        text = f"HD({number},MBR,0x{struct.unpack_from('<I', signature, 0)[0]:08x}"
    elif fmt == 2:
        text = f"HD({number},GPT,{_uefi_guid(signature)}"
    else:
        return None
    return text + (f",{start:#x},{size:#x})" if number else ")")


def _vendor_media(data: bytes) -> str | None:
    if len(data) < 16:
        return None
    return f"VenMedia({_uefi_guid(data)},{data[16:].hex()})"


def _file_path(data: bytes) -> str | None:
    if not data or len(data) % 2:
        return None
    return f"File({data[:-2].decode('utf-16-le', 'replace')})"


_BBS_TYPES: Final = {
    0x01: "FLOPPY",
    0x02: "HARD_DRIVE",
    0x03: "CDROM",
    0x04: "PCMCIA",
    0x05: "USB",
    0x06: "EMBEDDED_NETWORK",
    0x80: "DEV",
    0xFF: "UNKNOWN",
}


def _bbs(data: bytes) -> str | None:
    if len(data) < 4:
        return None
    device_type, status = struct.unpack_from("<HH", data, 0)
    description = data[4:].split(b"\x00", 1)[0].decode("utf-8")
    return f"BBS({_BBS_TYPES.get(device_type, str(device_type))},{description},{status})"


_NODE_FORMATTERS: Final[Mapping[tuple[int, int], Callable[[bytes], str | None]]] = {
    (1, 0x01): _pci,
    (2, 0x01): _acpi,
    (3, 0x05): _usb,
    (3, 0x0B): _mac,
    (3, 0x0C): _ipv4,
    (3, 0x15): _fibre_ex,
    (4, 0x01): _hard_drive,
    (4, 0x03): _vendor_media,
    (4, 0x04): _file_path,
    (5, 0x01): _bbs,
}
