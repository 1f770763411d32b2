"""UEFI measured boot on a TPM: the firmware's TCG2 event log checked against quoted PCRs and
turned into claims (firmware, Secure Boot state, boot applications, kernel, initrd, command
line).

The log is the same TCG2 crypto-agile format as the CC event log, so it is parsed by
:class:`~custodes.attestation.eventlog.ccel.CcEventLog`; an entry's ``index`` is a PCR here.
What this module adds is what makes the log *evidence*:

1. **Replay** (:func:`verify_against_pcrs`): for every PCR the log extends, the SHA-256 digests
   in log order, extended from the PCR's reset value, must give exactly the quoted value, and
   the PCR must be in the quote's selection (an unquoted PCR proves nothing). A log that
   replays proves that its *digests* are the ones the TPM saw, in that order.
2. **Event data** (:func:`check_event_data`): a replay binds only digests. For the event types
   whose digest is by definition the hash of the event's own data (a separator, a Secure Boot
   variable, an action string, the CRTM version; for a boot variable, the hash of the
   variable's data), the data must hash to the SHA-256 digest, so that a claim read from the
   data (``SecureBoot`` = 1, say) cannot be edited after the fact. Every other event's data
   (an image's device path, a tagged event's label) is a label only: claims take their *value*
   from the digest, never from that data.

Claims (:func:`measured_boot_claims`), all hex SHA-256 digests unless said otherwise:

* ``firmware``: ``pcr0`` (the replayed PCR 0: CRTM version, firmware volumes, separator),
  ``crtm_version`` (hex of the event data), ``blobs`` (digests of the firmware volumes),
  ``drivers`` (PCR 2: option ROMs and other boot-services drivers the firmware ran).
* ``secure_boot``: ``enabled`` (bool, from the measured ``SecureBoot`` variable; absent
  variable = false) and the digests of the measured ``PK``, ``KEK``, ``db``, ``dbx`` variable
  events.
* ``boot_applications``: the PCR 4 ``EV_EFI_BOOT_SERVICES_APPLICATION`` digests in order (a
  PE image's Authenticode digest: the boot loader, or the kernel's EFI stub when the firmware
  loads the kernel directly), each with its device path text; ``kernel`` is the last of them.
* ``kernel_cmdline``, ``initrd``: the digests the Linux EFI stub measures into PCR 9 as tagged
  events (``LOADED_IMAGE::LoadOptions``, tag 0x8F3B22ED: the UTF-16 load options including the
  terminating NUL; ``Linux initrd``, tag 0x8F3B22EC: the initrd's bytes). Absent when the stub
  did not measure them.

Reset values: every PCR starts at zeros, except PCR 0 when the log has a
``StartupLocality`` EV_NO_ACTION event (an H-CRTM or a locality-3 start), which starts PCR 0
at that locality (TCG PC Client PFP §10.4.5.3).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from custodes.attestation.eventlog.ccel import (
    ALG_SHA256,
    EV_NO_ACTION,
    CcEventLog,
    EventLogEntry,
)
from custodes.errors import MalformedEvidence, VerificationError
from custodes.types.json import JsonObject

PCR_COUNT: Final = 24
_SHA256_SIZE: Final = 32

EV_S_CRTM_VERSION: Final = 0x8
EV_SEPARATOR: Final = 0x4
EV_EVENT_TAG: Final = 0x6
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_VARIABLE_BOOT: Final = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER: Final = 0x80000004
EV_EFI_ACTION: Final = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB: Final = 0x80000008
EV_EFI_PLATFORM_FIRMWARE_BLOB2: Final = 0x8000000A
EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0

# The Linux EFI stub's tagged events (drivers/firmware/efi/libstub/efi-stub-helper.c).
LINUX_TAG_INITRD: Final = 0x8F3B22EC
LINUX_TAG_LOAD_OPTIONS: Final = 0x8F3B22ED

# Event types whose SHA-256 digest must be the hash of the whole event data.
_DIGEST_OF_EVENT: Final = frozenset(
    {EV_SEPARATOR, EV_S_CRTM_VERSION, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_ACTION}
)
_SECURE_BOOT_VARIABLES: Final = {"PK": "pk", "KEK": "kek", "db": "db", "dbx": "dbx"}
_STARTUP_LOCALITY: Final = b"StartupLocality\x00"


class ReplayMismatch(VerificationError):
    """The event log does not replay to the quoted PCR values, or extends an unquoted PCR."""

    code = "eventlog-replay-mismatch"


class EventDataMismatch(VerificationError):
    """An event's data does not hash to its digest: the log was edited after the fact."""

    code = "eventlog-event-edited"


def _sha256_of(entry: EventLogEntry) -> bytes:
    """The entry's SHA-256 digest; a measured event without one cannot be replayed."""
    for digest in entry.digests:
        if digest.algorithm == ALG_SHA256:
            return digest.digest
    raise MalformedEvidence(
        f"event log: a {entry.type_name} event in PCR {entry.index} has no SHA-256 digest"
    )


def _measured(log: CcEventLog) -> list[EventLogEntry]:
    return [e for e in log.entries if e.event_type != EV_NO_ACTION]


def _startup_locality(log: CcEventLog) -> int:
    for entry in log.entries:
        if entry.event_type == EV_NO_ACTION and entry.event.startswith(_STARTUP_LOCALITY):
            rest = entry.event[len(_STARTUP_LOCALITY) :]
            if len(rest) != 1:
                raise MalformedEvidence("event log: a StartupLocality event is not one byte")
            return rest[0]
    return 0


def replay_pcrs(log: CcEventLog) -> dict[int, bytes]:
    """The SHA-256 value of every PCR the log extends, replayed from its reset value."""
    values: dict[int, bytes] = {}
    locality = _startup_locality(log)
    for entry in _measured(log):
        if not 0 <= entry.index < PCR_COUNT:
            raise MalformedEvidence(f"event log: PCR index {entry.index} is out of range")
        start = bytes(_SHA256_SIZE - 1) + bytes([locality if entry.index == 0 else 0])
        current = values.get(entry.index, start)
        values[entry.index] = hashlib.sha256(current + _sha256_of(entry)).digest()
    return values


def verify_against_pcrs(
    log: CcEventLog, pcrs: Sequence[bytes], quoted: Collection[int]
) -> tuple[int, ...]:
    """Refuse unless every PCR the log extends is quoted and replays to its quoted value;
    returns those PCR indices, ascending. ``pcrs`` are the 24 SHA-256 values whose digest the
    quote signed, ``quoted`` the selected indices."""
    replayed = replay_pcrs(log)
    if not replayed:
        raise ReplayMismatch("the event log measures nothing")
    for index in sorted(replayed):
        if index not in quoted:
            raise ReplayMismatch(f"the event log extends PCR {index}, which is not quoted")
        if not hmac.compare_digest(replayed[index], pcrs[index]):
            raise ReplayMismatch(f"the event log does not replay to the quoted PCR {index}")
    return tuple(sorted(replayed))


def check_event_data(log: CcEventLog) -> None:
    """Refuse an event whose data must hash to its SHA-256 digest and does not."""
    for position, entry in enumerate(log.entries):
        if entry.event_type in _DIGEST_OF_EVENT:
            data = entry.event
        elif entry.event_type == EV_EFI_VARIABLE_BOOT:
            data = _variable_data(entry)  # boot variables are measured by their data only
        else:
            continue
        if not hmac.compare_digest(hashlib.sha256(data).digest(), _sha256_of(entry)):
            raise EventDataMismatch(
                f"event {position} ({entry.type_name} in PCR {entry.index}) does not match "
                "its digest"
            )


def _variable_data(entry: EventLogEntry) -> bytes:
    # UEFI_VARIABLE_DATA: GUID, u64 name length, u64 data length, UTF-16 name, data; the
    # length checks were made when the entry was parsed.
    name_len, data_len = struct.unpack_from("<QQ", entry.event, 16)
    start = 32 + 2 * name_len
    return entry.event[start : start + data_len]


def _tag_id(entry: EventLogEntry) -> int | None:
    if len(entry.event) < 8:
        return None
    tag: int = struct.unpack_from("<I", entry.event, 0)[0]
    return tag


def measured_boot_claims(log: CcEventLog, replayed: Collection[int]) -> JsonObject:
    """The claims of a log that :func:`verify_against_pcrs` and :func:`check_event_data`
    accepted; ``replayed`` is what the former returned (PCR 0 must be among them)."""
    values = replay_pcrs(log)
    measured = _measured(log)
    firmware: JsonObject = {
        "pcr0": values[0].hex() if 0 in values and 0 in replayed else None,
        "crtm_version": None,
        "blobs": [],
        "drivers": [],
    }
    secure_boot: JsonObject = {"enabled": False}
    applications: list[JsonObject] = []
    claims: JsonObject = {}
    for entry in measured:
        digest = _sha256_of(entry).hex()
        kind, pcr = entry.event_type, entry.index
        if pcr == 0 and kind == EV_S_CRTM_VERSION:
            firmware["crtm_version"] = entry.event.hex()
        elif pcr == 0 and kind in (EV_EFI_PLATFORM_FIRMWARE_BLOB, EV_EFI_PLATFORM_FIRMWARE_BLOB2):
            _append(firmware, "blobs", digest)
        elif pcr == 2 and kind == EV_EFI_BOOT_SERVICES_DRIVER:
            _append(firmware, "drivers", digest)
        elif pcr == 7 and kind == EV_EFI_VARIABLE_DRIVER_CONFIG:
            name = entry.details.unicode_name
            if name == "SecureBoot":
                secure_boot["enabled"] = entry.event[-1:] == b"\x01" and _is_one_byte(entry)
            elif name in _SECURE_BOOT_VARIABLES:
                secure_boot[_SECURE_BOOT_VARIABLES[name]] = digest
        elif pcr == 4 and kind == EV_EFI_BOOT_SERVICES_APPLICATION:
            path = "/".join(entry.details.device_paths or ())
            applications.append({"digest": digest, "path": path})
        elif pcr == 9 and kind == EV_EVENT_TAG:
            tag = _tag_id(entry)
            if tag == LINUX_TAG_LOAD_OPTIONS:
                claims["kernel_cmdline"] = digest
            elif tag == LINUX_TAG_INITRD:
                claims["initrd"] = digest
    claims["firmware"] = firmware
    claims["secure_boot"] = secure_boot
    claims["boot_applications"] = list(applications)
    if applications:
        claims["kernel"] = applications[-1]["digest"]
    claims["pcrs"] = sorted(replayed)
    return claims


def _append(obj: JsonObject, key: str, value: str) -> None:
    items = obj[key]
    if isinstance(items, list):
        items.append(value)


def _is_one_byte(entry: EventLogEntry) -> bool:
    return entry.details.variable_data_length == 1


@dataclass(frozen=True, slots=True)
class MeasuredBoot:
    """A verified measured-boot log: parsed, replayed against the quote, event data checked."""

    log: CcEventLog
    replayed: tuple[int, ...]

    @classmethod
    def verify(cls, data: bytes, pcrs: Sequence[bytes], quoted: Collection[int]) -> MeasuredBoot:
        """Parse ``data`` and run every check; each failure raises its own error."""
        log = CcEventLog.from_bytes(data)
        replayed = verify_against_pcrs(log, pcrs, quoted)
        check_event_data(log)
        return cls(log=log, replayed=replayed)

    def claims(self) -> JsonObject:
        return measured_boot_claims(self.log, self.replayed)

    def pcr_values(self) -> Mapping[int, bytes]:
        return replay_pcrs(self.log)
