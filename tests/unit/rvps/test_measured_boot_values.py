"""Reference values of a measured boot computed from the artifacts: the Authenticode digest,
QEMU's direct-boot header patch, the load options, the recorded firmware, and the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from custodes.cli import main
from custodes.errors import ReferenceValueError
from custodes.rvps.measured_boot import (
    RECORDED_FIRMWARE,
    NotAPeImage,
    authenticode_sha256,
    load_options_sha256,
    ovmf_load_options,
    qemu_direct_boot_image,
    recorded_firmware,
    reference_values,
)
from live_broker import LiveBroker

VM = Path(__file__).parents[3] / "tests" / "vectors" / "vm"
LOG = (VM / "ovmf-direct-boot.eventlog").read_bytes()
PCR0 = json.loads((VM / "ovmf-direct-boot.pcrs.json").read_text())["0"]

PE_OFFSET = 0x80
OPTIONAL = PE_OFFSET + 24
CHECKSUM = OPTIONAL + 64
DIRECTORIES = OPTIONAL + 112
CERT_ENTRY = DIRECTORIES + 8 * 4
SECTIONS = OPTIONAL + 240  # 112 + 16 directories x 8
HEADERS = 0x200


def _pe(*, with_cert: bool = True) -> bytes:
    """A PE32+ image: two sections stored in the file in the order opposite to their headers,
    a gap of trailing data, and (optionally) an attribute certificate table at the end."""
    image = bytearray(HEADERS)
    image[0:2] = b"MZ"
    struct.pack_into("<I", image, 0x3C, PE_OFFSET)
    image[PE_OFFSET : PE_OFFSET + 4] = b"PE\0\0"
    struct.pack_into("<HH", image, PE_OFFSET + 4, 0x8664, 2)  # machine, section count
    struct.pack_into("<H", image, PE_OFFSET + 20, 240)  # optional header size
    struct.pack_into("<H", image, OPTIONAL, 0x20B)
    struct.pack_into("<I", image, OPTIONAL + 60, HEADERS)  # SizeOfHeaders
    struct.pack_into("<I", image, CHECKSUM, 0xDEADBEEF)
    struct.pack_into("<I", image, DIRECTORIES - 4, 16)
    first, second = b"A" * 0x200, b"B" * 0x400
    # header 0 describes the section stored second, header 1 the one stored first
    struct.pack_into("<II", image, SECTIONS + 16, len(first), HEADERS + len(second))
    struct.pack_into("<II", image, SECTIONS + 40 + 16, len(second), HEADERS)
    body = bytes(image) + second + first + b"trailing data"
    if not with_cert:
        return body
    cert = b"C" * 64
    patched = bytearray(body)
    struct.pack_into("<II", patched, CERT_ENTRY, len(body), len(cert))
    return bytes(patched) + cert


def test_authenticode_skips_checksum_and_certificate_table() -> None:
    image = _pe()
    expected = hashlib.sha256(
        image[:CHECKSUM]
        + image[CHECKSUM + 4 : CERT_ENTRY]
        + image[CERT_ENTRY + 8 : HEADERS]
        + image[HEADERS : HEADERS + 0x600]  # the sections in file order
        + b"trailing data"
    ).digest()
    assert authenticode_sha256(image) == expected
    # neither the checksum nor the signature changes the digest; any other byte does
    resigned = bytearray(image)
    struct.pack_into("<I", resigned, CHECKSUM, 1)
    resigned[-1:] = b"D"
    assert authenticode_sha256(bytes(resigned)) == expected
    code = bytearray(image)
    code[HEADERS + 5] ^= 1
    assert authenticode_sha256(bytes(code)) != expected


def test_authenticode_without_a_certificate_table() -> None:
    # The (empty) Certificate Table entry is still left out; everything after the sections
    # is hashed.
    image = _pe(with_cert=False)
    expected = hashlib.sha256(
        image[:CHECKSUM]
        + image[CHECKSUM + 4 : CERT_ENTRY]
        + image[CERT_ENTRY + 8 : HEADERS]
        + image[HEADERS:]
    ).digest()
    assert authenticode_sha256(image) == expected


@pytest.mark.parametrize(
    "image",
    [b"", b"MZ" + b"\0" * 10, b"ELF" + bytes(1000), _pe()[:300], _pe()[: HEADERS + 100]],
)
def test_not_a_pe_image(image: bytes) -> None:
    with pytest.raises(NotAPeImage):
        authenticode_sha256(image)


def _bzimage() -> bytes:
    image = bytearray(_pe())
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, 0x20F)
    image[0x211] = 0x01
    struct.pack_into("<I", image, 0x22C, 0x7FFFFFFF)
    return bytes(image)


def test_qemu_direct_boot_patches_the_setup_header() -> None:
    image = _bzimage()
    patched = qemu_direct_boot_image(image, memory=512 << 20, initrd_size=1_000_000)
    assert patched[0x210] == 0xB0 and patched[0x211] == 0x81
    assert struct.unpack_from("<H", patched, 0x224)[0] == 0xFE00
    assert struct.unpack_from("<I", patched, 0x228)[0] == 0x20000
    address, size = struct.unpack_from("<II", patched, 0x218)
    assert size == 1_000_000
    assert address == ((512 << 20) - 0x28000 - 1 - 1_000_000) & ~0xFFF
    # every other byte is the file's
    changed = {i for i in range(len(image)) if image[i] != patched[i]}
    assert changed <= set(range(0x210, 0x22C))
    # the initrd's size is in the measured image: another initrd, another kernel digest
    other = qemu_direct_boot_image(image, memory=512 << 20, initrd_size=2_000_000)
    assert authenticode_sha256(other) != authenticode_sha256(patched)


def test_qemu_direct_boot_needs_a_bzimage() -> None:
    with pytest.raises(NotAPeImage, match="bzImage"):
        qemu_direct_boot_image(_pe(), memory=512 << 20, initrd_size=None)


def test_load_options_digest_is_what_the_stub_measured() -> None:
    options = ovmf_load_options("console=ttyS0 quiet panic=-1", with_initrd=True)
    assert options == "console=ttyS0 quiet panic=-1 initrd=initrd"
    # the kernel_cmdline claim of the recorded boot (tests/vectors/vm)
    assert (
        load_options_sha256(options).hex()
        == "5e0ce2240f9b711350ba045dc401b962587abaa582b3da0d32585801138bc683"
    )


def test_recorded_firmware_from_an_event_log() -> None:
    firmware = recorded_firmware(b"any firmware file", LOG)
    assert firmware.pcr0 == PCR0
    assert firmware.secure_boot is False
    assert firmware.source.startswith("recorded: event log")


def test_the_shipped_recording_matches_the_vector() -> None:
    (recording,) = RECORDED_FIRMWARE.values()
    assert recording.pcr0 == PCR0


def test_unknown_firmware_without_a_log_is_refused() -> None:
    with pytest.raises(ReferenceValueError, match="no recorded boot"):
        recorded_firmware(b"another firmware", None)


def test_an_edited_firmware_log_is_refused() -> None:
    name = "SecureBoot".encode("utf-16-le")
    position = LOG.find(name) + len(name)
    edited = LOG[:position] + b"\x01" + LOG[position + 1 :]
    with pytest.raises(Exception, match="does not match its digest"):
        recorded_firmware(b"fw", edited)


def test_reference_values_of_a_direct_boot() -> None:
    firmware = recorded_firmware(b"fw", LOG)
    values = reference_values(
        firmware=firmware, kernel=_bzimage(), initrd=b"initrd", cmdline="ro", qemu_memory=1 << 30
    )
    assert values["measured_boot_firmware"] == [PCR0]
    assert values["measured_boot_secure_boot"] == [False]
    assert values["measured_boot_initrd"] == [hashlib.sha256(b"initrd").hexdigest()]
    assert values["measured_boot_cmdline"] == [load_options_sha256("ro initrd=initrd").hex()]
    patched = qemu_direct_boot_image(_bzimage(), memory=1 << 30, initrd_size=6)
    assert values["measured_boot_kernel"] == [authenticode_sha256(patched).hex()]


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str | Path) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = int(e.code) if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_prints_an_rvps_message(cli: Any, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_pe())
    log = tmp_path / "boot.log"
    log.write_bytes(LOG)
    code, out, err = cli(
        "rv", "measured-boot", "--firmware", kernel, "--firmware-log", log,
        "--kernel", kernel, "--cmdline", "quiet", "--unpatched-kernel",
    )  # fmt: skip
    assert code == 0, err
    message = json.loads(out)
    assert message["type"] == "sample"
    values = json.loads(base64.b64decode(message["payload"]))
    assert values["measured_boot_kernel"] == [authenticode_sha256(_pe()).hex()]
    assert values["measured_boot_cmdline"] == [load_options_sha256("quiet").hex()]
    assert "measured_boot_initrd" not in values
    assert "recorded: event log" in err


def test_cli_unknown_firmware_is_a_one_line_error(cli: Any, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_pe())
    code, out, err = cli("rv", "measured-boot", "--firmware", kernel, "--kernel", kernel)
    assert code != 0 and out == ""
    assert err.startswith("custodes: error: no recorded boot") and err.count("\n") == 1


def test_cli_a_kernel_that_is_not_a_bzimage_is_a_one_line_error(cli: Any, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"not a kernel")
    log = tmp_path / "boot.log"
    log.write_bytes(LOG)
    code, _, err = cli(
        "rv", "measured-boot", "--firmware", kernel, "--firmware-log", log, "--kernel", kernel
    )
    assert code != 0
    assert err.startswith("custodes: error: ") and "Traceback" not in err


def test_cli_register_signs_as_the_subject_and_stores_the_values(
    cli: Any, tmp_path: Path, broker: LiveBroker
) -> None:
    """--register signs its token as every admin command does: --subject is the one the key
    is registered under (``admin`` here), another is refused and stores nothing."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(_pe())
    log = tmp_path / "boot.log"
    log.write_bytes(LOG)
    argv = (
        "rv", "measured-boot", "--firmware", kernel, "--firmware-log", log, "--kernel", kernel,
        "--unpatched-kernel", "--register", "--url", broker.url,
        "--key", broker.data_dir / "admin-key.pem",
    )  # fmt: skip
    code, _, err = cli(*argv, "--subject", "alice")
    assert code == 1 and "not the key's registered subject" in err, err
    with broker.admin() as admin:
        assert "measured_boot_kernel" not in admin.list_reference_values()
    code, _, err = cli(*argv)
    assert code == 0, err
    assert "registered reference value measured_boot_kernel" in err
    with broker.admin() as admin:
        stored = admin.get_reference_value("measured_boot_kernel")
    assert stored["value"] == [authenticode_sha256(_pe()).hex()]
