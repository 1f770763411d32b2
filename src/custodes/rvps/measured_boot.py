"""Reference values of a measured UEFI boot, computed from the artifacts rather than read from a
trusted first boot: what a clean boot of this kernel, initrd and command line must measure.

* ``kernel``: the PE/COFF Authenticode SHA-256 digest of the kernel image (its EFI stub is what
  the firmware loads and measures into PCR 4 as ``EV_EFI_BOOT_SERVICES_APPLICATION``).
  Computed here by hand (:func:`authenticode_sha256`, ~40 lines of the Microsoft PE/COFF
  Authenticode algorithm) rather than with a dependency: only the hash is needed, not
  signature parsing, and the algorithm is small and fixed.
* ``initrd``: SHA-256 of the initrd's bytes, as the Linux EFI stub measures it into PCR 9.
* ``kernel_cmdline``: SHA-256 of the load options as the stub measures them: UTF-16LE including
  the terminating NUL. OVMF's direct kernel boot (QEMU ``-kernel``/``-initrd``) appends
  `` initrd=initrd`` to the command line QEMU passes (:func:`ovmf_load_options`).

Firmware values (the replayed PCR 0, the PCR 2 drivers) cannot be computed from
``OVMF_CODE.fd``: its firmware volumes are measured after decompression into memory. They
come from a recorded boot of that exact firmware file and are marked as such by the caller.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from custodes.errors import ReferenceValueError

_PE_SIGNATURE: Final = b"PE\x00\x00"
_PE32: Final = 0x10B
_PE32_PLUS: Final = 0x20B
_CERT_TABLE_DIRECTORY: Final = 4  # IMAGE_DIRECTORY_ENTRY_SECURITY
_SECTION_HEADER_SIZE: Final = 40


class NotAPeImage(ReferenceValueError):
    """The kernel file is not a PE/COFF image (an EFI-stub kernel is one)."""

    code = "not-a-pe-image"


def _u16(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def authenticode_sha256(image: bytes) -> bytes:
    """The Authenticode SHA-256 digest of a PE/COFF image (what UEFI measures for an image).

    Hashed: the headers up to SizeOfHeaders except the CheckSum field and the Certificate
    Table directory entry; then each section's raw data in file order; then any bytes after
    the last section that are not the attribute certificate table.
    """
    try:
        if image[:2] != b"MZ":
            raise NotAPeImage("the kernel has no MZ header")
        pe = _u32(image, 0x3C)
        if image[pe : pe + 4] != _PE_SIGNATURE:
            raise NotAPeImage("the kernel has no PE signature")
        coff = pe + 4
        sections = _u16(image, coff + 2)
        optional_size = _u16(image, coff + 16)
        optional = coff + 20
        magic = _u16(image, optional)
        if magic == _PE32:
            directories = optional + 96
        elif magic == _PE32_PLUS:
            directories = optional + 112
        else:
            raise NotAPeImage(f"unknown PE optional header magic {magic:#x}")
        checksum = optional + 64
        directory_count = _u32(image, directories - 4)
        if directory_count <= _CERT_TABLE_DIRECTORY:
            cert_entry, cert_offset, cert_size = None, 0, 0
        else:
            cert_entry = directories + 8 * _CERT_TABLE_DIRECTORY
            cert_offset, cert_size = struct.unpack_from("<II", image, cert_entry)
        headers_size = _u32(image, optional + 60)
        table = optional + optional_size
        if headers_size > len(image) or table + sections * _SECTION_HEADER_SIZE > len(image):
            raise NotAPeImage("the PE headers run past the end of the file")
        digest = hashlib.sha256()
        if cert_entry is None:
            digest.update(image[:checksum])
            digest.update(image[checksum + 4 : headers_size])
        else:
            digest.update(image[:checksum])
            digest.update(image[checksum + 4 : cert_entry])
            digest.update(image[cert_entry + 8 : headers_size])
        hashed = headers_size
        raw: list[tuple[int, int]] = []
        for i in range(sections):
            header = table + i * _SECTION_HEADER_SIZE
            size, pointer = struct.unpack_from("<II", image, header + 16)
            if size:
                raw.append((pointer, size))
        for pointer, size in sorted(raw):
            if pointer + size > len(image):
                raise NotAPeImage("a PE section runs past the end of the file")
            digest.update(image[pointer : pointer + size])
            hashed += size
        end = len(image) - cert_size if cert_size and cert_offset else len(image)
        if end > hashed:
            digest.update(image[hashed:end])
        return digest.digest()
    except struct.error as e:
        raise NotAPeImage("the kernel's PE headers are truncated") from e


# QEMU's direct kernel boot (``-kernel``, hw/i386/x86.c ``x86_load_linux``) patches the
# kernel's setup header before OVMF reads it from fw_cfg and measures it, so the digest in
# PCR 4 is that of the patched image, not of the file. The patched fields, for a boot
# protocol >= 2.02 kernel loaded high (every EFI-stub kernel):
_TYPE_OF_LOADER: Final = 0x210  # u8  = 0xB0 (QEMU)
_LOADFLAGS: Final = 0x211  # u8 |= 0x80 (CAN_USE_HEAP)
_RAMDISK: Final = 0x218  # u32 ramdisk_image, u32 ramdisk_size
_HEAP_END: Final = 0x224  # u16 = cmd_line_ptr - real-mode base - 0x200
_CMDLINE_PTR: Final = 0x228  # u32 = 0x20000
_INITRD_ADDR_MAX: Final = 0x22C
_QEMU_REAL_ADDR: Final = 0x10000
_QEMU_CMDLINE_ADDR: Final = 0x20000
_QEMU_ACPI_DATA_SIZE: Final = 0x28000  # reserved below the top of low memory (q35, pc >= 2.x)
_Q35_LOWMEM_SPLIT: Final = 0xB0000000
_Q35_LOWMEM: Final = 0x80000000
_HDRS_MAGIC: Final = b"HdrS"
_MIN_PROTOCOL: Final = 0x202


def qemu_direct_boot_image(image: bytes, *, memory: int, initrd_size: int | None) -> bytes:
    """The kernel image as OVMF measures it under QEMU ``-machine q35 -m memory -kernel``:
    the setup header patched as QEMU patches it (loader type, heap, command-line pointer and,
    with an initrd, its address and size, which depend on the guest's low memory)."""
    if image[0x202:0x206] != _HDRS_MAGIC or _u16(image, 0x206) < _MIN_PROTOCOL:
        raise NotAPeImage("the kernel is not a bzImage of boot protocol 2.02 or later")
    patched = bytearray(image)
    patched[_TYPE_OF_LOADER] = 0xB0
    patched[_LOADFLAGS] |= 0x80
    struct.pack_into("<H", patched, _HEAP_END, _QEMU_CMDLINE_ADDR - _QEMU_REAL_ADDR - 0x200)
    struct.pack_into("<I", patched, _CMDLINE_PTR, _QEMU_CMDLINE_ADDR)
    if initrd_size is not None:
        below_4g = min(memory, _Q35_LOWMEM if memory >= _Q35_LOWMEM_SPLIT else memory)
        initrd_max = min(_u32(image, _INITRD_ADDR_MAX), below_4g - _QEMU_ACPI_DATA_SIZE - 1)
        address = (initrd_max - initrd_size) & ~0xFFF
        struct.pack_into("<II", patched, _RAMDISK, address, initrd_size)
    return bytes(patched)


def ovmf_load_options(cmdline: str, *, with_initrd: bool) -> str:
    """The load options OVMF's QEMU direct boot hands the kernel for ``-append cmdline``."""
    return f"{cmdline} initrd=initrd" if with_initrd else cmdline


def load_options_sha256(load_options: str) -> bytes:
    """SHA-256 of the load options as the Linux EFI stub measures them (UTF-16LE + NUL)."""
    return hashlib.sha256(load_options.encode("utf-16-le") + b"\x00\x00").digest()


def initrd_sha256(initrd: bytes) -> bytes:
    return hashlib.sha256(initrd).digest()


# --- firmware: recorded boots ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedFirmware:
    """PCR 0 of a boot of one exact firmware file, recorded, not computed (see the module
    docstring); ``source`` says where the recording came from."""

    pcr0: str
    secure_boot: bool
    source: str


# SHA-256 of the firmware file -> what a boot of it measured (PCR 0 does not depend on the
# kernel, initrd, command line or memory size). Add a line per firmware build you approve,
# from the event log of a boot of that file (or pass it as `--firmware-log`).
RECORDED_FIRMWARE: Final[dict[str, RecordedFirmware]] = {
    "b157d97b1f69729514feb7f201d2cbe4957f23ab77920e361fe9f822ba49ca4c": RecordedFirmware(
        pcr0="177e29c417b6b61c7cf46ed30b4468931f58642527a268b556254e39b941ec6a",
        secure_boot=False,
        source="recorded: Debian ovmf 2022.11-6+deb12u2 OVMF_CODE_4M.fd, QEMU 7.2 q35, "
        "tests/vectors/vm/",
    ),
}


def recorded_firmware(firmware: bytes, eventlog: bytes | None) -> RecordedFirmware:
    """The firmware's recorded values: from ``eventlog`` (a TCG2 log of a boot of this
    firmware) when given, else from :data:`RECORDED_FIRMWARE`."""
    from custodes.attestation.eventlog.ccel import CcEventLog
    from custodes.attestation.eventlog.measured_boot import check_event_data, replay_pcrs

    digest = hashlib.sha256(firmware).hexdigest()
    if eventlog is None:
        known = RECORDED_FIRMWARE.get(digest)
        if known is None:
            raise ReferenceValueError(
                f"no recorded boot of the firmware with SHA-256 {digest}: pass --firmware-log "
                "with the event log of a boot of this exact file"
            )
        return known
    log = CcEventLog.from_bytes(eventlog)
    check_event_data(log)
    values = replay_pcrs(log)
    if 0 not in values:
        raise ReferenceValueError("the firmware event log measures nothing into PCR 0")
    enabled = any(
        e.index == 7 and e.details.unicode_name == "SecureBoot" and e.event[-1:] == b"\x01"
        for e in log.entries
    )
    return RecordedFirmware(
        pcr0=values[0].hex(), secure_boot=enabled, source=f"recorded: event log, firmware {digest}"
    )


def reference_values(
    *,
    firmware: RecordedFirmware,
    kernel: bytes,
    initrd: bytes | None,
    cmdline: str,
    qemu_memory: int | None,
) -> dict[str, list[str] | list[bool]]:
    """The reference values (ids of ``custodes/vm/measured_boot.rego``) a clean boot of these
    artifacts measures. ``qemu_memory``: the guest RAM in bytes when QEMU direct-boots the
    kernel (its header is patched before it is measured); ``None`` for an unmodified image."""
    image = (
        kernel
        if qemu_memory is None
        else qemu_direct_boot_image(
            kernel, memory=qemu_memory, initrd_size=None if initrd is None else len(initrd)
        )
    )
    options = ovmf_load_options(cmdline, with_initrd=initrd is not None)
    values: dict[str, list[str] | list[bool]] = {
        "measured_boot_firmware": [firmware.pcr0],
        "measured_boot_secure_boot": [firmware.secure_boot],
        "measured_boot_kernel": [authenticode_sha256(image).hex()],
        "measured_boot_cmdline": [load_options_sha256(options).hex()],
    }
    if initrd is not None:
        values["measured_boot_initrd"] = [initrd_sha256(initrd).hex()]
    return values
