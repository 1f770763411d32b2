"""Measured boot on a TPM: the recorded VM log replayed against its PCRs, its claims, and the
refusals (a log that does not replay, an unquoted PCR, an event edited after the fact)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from custodes.attestation.eventlog import CcEventLog
from custodes.attestation.eventlog.measured_boot import (
    EventDataMismatch,
    MeasuredBoot,
    ReplayMismatch,
    check_event_data,
    replay_pcrs,
)
from custodes.errors import MalformedEvidence

VECTORS = Path(__file__).parents[4] / "tests" / "vectors"
VM = VECTORS / "vm"
TRUSTEE_LOGS = VECTORS / "trustee" / "deps" / "eventlog" / "test_data"
LOG = (VM / "ovmf-direct-boot.eventlog").read_bytes()
_PCR_JSON = json.loads((VM / "ovmf-direct-boot.pcrs.json").read_text())
PCRS = tuple(bytes.fromhex(_PCR_JSON[str(i)]) for i in range(24))
ALL = range(24)


def _offset_of(log: bytes, needle: bytes) -> int:
    position = log.find(needle)
    assert position > 0, needle
    return position


def test_the_recorded_log_replays_to_the_recorded_pcrs() -> None:
    boot = MeasuredBoot.verify(LOG, PCRS, ALL)
    assert boot.replayed == (0, 1, 2, 3, 4, 5, 6, 7, 9)
    for index, value in boot.pcr_values().items():
        assert value == PCRS[index]


def test_claims_of_the_recorded_boot() -> None:
    claims = MeasuredBoot.verify(LOG, PCRS, ALL).claims()
    firmware = claims["firmware"]
    assert isinstance(firmware, dict)
    assert firmware["pcr0"] == PCRS[0].hex()
    assert firmware["crtm_version"] == "0000"
    assert isinstance(firmware["blobs"], list) and len(firmware["blobs"]) == 2
    secure_boot = claims["secure_boot"]
    assert isinstance(secure_boot, dict)
    assert secure_boot["enabled"] is False
    assert sorted(secure_boot) == ["db", "dbx", "enabled", "kek", "pk"]
    # PK is measured although empty: the digest of its UEFI_VARIABLE_DATA, not of nothing.
    assert secure_boot["pk"] != hashlib.sha256(b"").hexdigest()
    assert claims["kernel"] == "09267984c90e4ca358fc6500d30daf0ec8dfc3a0bc972f697066568e0a065a09"
    assert claims["boot_applications"] == [
        {
            "digest": claims["kernel"],
            "path": "VenMedia(1428F772-B64A-441E-B8C3-9EBDD7F893C7,)/File(kernel)",
        }
    ]
    # What the Linux EFI stub measured: the UTF-16LE load options with their NUL ...
    options = "console=ttyS0 quiet panic=-1 initrd=initrd".encode("utf-16-le") + b"\0\0"
    assert claims["kernel_cmdline"] == hashlib.sha256(options).hexdigest()
    # ... and the initrd the VM booted (the project's deterministic initramfs).
    assert claims["initrd"] == "ca4d17a7df5817ed1f77368bfc7a7e278ac3cdcc01b8c251af900ff86fc83b20"
    assert claims["pcrs"] == [0, 1, 2, 3, 4, 5, 6, 7, 9]


def test_a_log_that_does_not_replay_to_a_quoted_pcr_is_refused() -> None:
    other = list(PCRS)
    other[9] = hashlib.sha256(b"another initrd").digest()
    with pytest.raises(ReplayMismatch, match="PCR 9"):
        MeasuredBoot.verify(LOG, other, ALL)


def test_a_digest_changed_in_the_log_is_refused() -> None:
    # The kernel's digest replaced by another: the log no longer replays to PCR 4.
    kernel = bytes.fromhex("09267984c90e4ca358fc6500d30daf0ec8dfc3a0bc972f697066568e0a065a09")
    edited = LOG.replace(kernel, hashlib.sha256(b"my kernel").digest())
    assert edited != LOG
    with pytest.raises(ReplayMismatch, match="PCR 4"):
        MeasuredBoot.verify(edited, PCRS, ALL)


def test_a_log_extending_an_unquoted_pcr_is_refused() -> None:
    quoted = [i for i in ALL if i != 7]
    with pytest.raises(ReplayMismatch, match="PCR 7, which is not quoted"):
        MeasuredBoot.verify(LOG, PCRS, quoted)


def test_an_event_edited_after_the_fact_is_refused() -> None:
    # "SecureBoot" = 0 turned into 1: the data no longer hashes to the digest the TPM got
    # (which still replays, since the replay reads digests only).
    name = "SecureBoot".encode("utf-16-le")
    position = _offset_of(LOG, name) + len(name)
    assert LOG[position] == 0
    edited = LOG[:position] + b"\x01" + LOG[position + 1 :]
    assert replay_pcrs(CcEventLog.from_bytes(edited)) == replay_pcrs(CcEventLog.from_bytes(LOG))
    with pytest.raises(EventDataMismatch, match="EV_EFI_VARIABLE_DRIVER_CONFIG in PCR 7"):
        MeasuredBoot.verify(edited, PCRS, ALL)


def test_an_edited_action_string_is_refused() -> None:
    text = b"Exit Boot Services Invocation"
    position = _offset_of(LOG, text)
    edited = LOG[:position] + b"exit" + LOG[position + 4 :]
    with pytest.raises(EventDataMismatch, match="EV_EFI_ACTION in PCR 5"):
        MeasuredBoot.verify(edited, PCRS, ALL)


def test_an_edited_boot_variable_is_refused() -> None:
    # EV_EFI_VARIABLE_BOOT is measured by its data only: BootOrder 0000 -> 0100.
    name = "BootOrder".encode("utf-16-le")
    position = _offset_of(LOG, name) + len(name)
    edited = LOG[:position] + b"\x01" + LOG[position + 1 :]
    with pytest.raises(EventDataMismatch, match="EV_EFI_VARIABLE_BOOT in PCR 1"):
        check_event_data(CcEventLog.from_bytes(edited))


def test_a_truncated_log_is_malformed() -> None:
    with pytest.raises(MalformedEvidence):
        MeasuredBoot.verify(LOG[:-7], PCRS, ALL)


def test_a_log_without_measurements_is_refused() -> None:
    header_end = 32 + struct.unpack_from("<I", LOG, 28)[0]  # the Spec ID event only
    with pytest.raises(ReplayMismatch, match="measures nothing"):
        MeasuredBoot.verify(LOG[:header_end], PCRS, ALL)


def test_a_startup_locality_event_starts_pcr0_at_the_locality() -> None:
    log = CcEventLog.from_bytes(LOG)
    locality_event = (
        struct.pack("<II", 0, 3)  # PCR 0, EV_NO_ACTION
        + struct.pack("<I", 1)
        + struct.pack("<H", 0x000B)
        + bytes(32)
        + struct.pack("<I", 17)
        + b"StartupLocality\x00\x03"
    )
    header_end = 32 + struct.unpack_from("<I", LOG, 28)[0]
    with_locality = LOG[:header_end] + locality_event + LOG[header_end:]
    replayed = replay_pcrs(CcEventLog.from_bytes(with_locality))
    start = bytes(31) + b"\x03"
    first = hashlib.sha256(start + log.entries[0].digests[0].digest).digest()
    assert replayed[0] != replay_pcrs(log)[0]
    value = first
    for entry in [e for e in log.entries if e.index == 0][1:]:
        value = hashlib.sha256(value + entry.digests[0].digest).digest()
    assert replayed[0] == value


@pytest.mark.parametrize("name", ["CCEL_data_ovmf", "CCEL_data", "CCEL_data_grub"])
def test_upstream_firmware_logs_have_consistent_event_data(name: str) -> None:
    # The same self-describing events in TDVF/grub logs (SHA-384 CCEL, with the SHA-256 digest
    # absent) parse; a log without SHA-256 digests is refused, not replayed with zeros.
    log = CcEventLog.from_bytes((TRUSTEE_LOGS / name).read_bytes())
    assert log.entries
    with pytest.raises(MalformedEvidence, match="no SHA-256 digest"):
        check_event_data(log)
