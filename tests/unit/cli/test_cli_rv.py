"""``custodes rv snp-measurement``: the launch digest from sev-snp-measure used as a library,
the checks on the OVMF image before it, and registration at a real broker.

No OVMF build is installed here (and none is installed for the tests). sev-snp-measure reads
any file that carries OVMF's footer table, so the tests build small synthetic firmware images
with exactly the structures it reads (footer GUID table, SEV metadata, reset block, hashes
table) and compare the command's output with the library's own ``calc_launch_digest``. The one
test that needs a real OVMF runs only where ``/usr/share/ovmf/OVMF.fd`` exists and is skipped
with that reason otherwise.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sevsnpmeasure import guest as snp_guest  # type: ignore[import-untyped]
from sevsnpmeasure.sev_mode import SevMode  # type: ignore[import-untyped]
from sevsnpmeasure.vcpu_types import CPU_SIGS  # type: ignore[import-untyped]

from custodes.cli import main
from custodes.cli.rv import (
    DEFAULT_REFERENCE_VALUE,
    KernelHashesUnsupported,
    OvmfInvalid,
    snp_launch_measurement,
)
from custodes.errors import ConfigError
from live_broker import LiveBroker

REAL_OVMF = Path("/usr/share/ovmf/OVMF.fd")
PAGE = 4096
FOOTER_GUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
SEV_METADATA_GUID = "dc886566-984a-4798-a75e-5585a7bf67cc"
RESET_BLOCK_GUID = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
HASHES_TABLE_GUID = "7255371f-3a3b-4b04-927b-1da6efa8d454"
SEC_MEM, SECRETS, CPUID, KERNEL_HASHES = 1, 2, 3, 0x10
HASHES_PAGE_GPA = 0x80F000


def _entry(guid: str, data: bytes) -> bytes:
    """One footer-table entry: data, then its total size (u16) and GUID (little-endian)."""
    return data + struct.pack("<H", len(data) + 18) + uuid.UUID(guid).bytes_le


def synthetic_ovmf(
    *, metadata: bool = True, kernel_hashes: bool = False, pages: int = 4, seed: int = 7
) -> bytes:
    """An OVMF-shaped image: page 1 holds the SEV metadata (``ASEV``), the footer table sits
    just before the last 32 bytes, and the other bytes are a fixed pattern."""
    size = pages * PAGE
    image = bytearray((seed * i + i // 251) & 0xFF for i in range(size))
    sections = [(0x800000, 3 * PAGE, SEC_MEM), (0x80B000, PAGE, SECRETS), (0x80C000, PAGE, CPUID)]
    if kernel_hashes:
        sections.append((HASHES_PAGE_GPA, PAGE, KERNEL_HASHES))
    header = b"ASEV" + struct.pack("<III", 16 + 12 * len(sections), 1, len(sections))
    body = b"".join(struct.pack("<III", *s) for s in sections)
    image[PAGE : PAGE + len(header) + len(body)] = header + body
    entries = _entry(RESET_BLOCK_GUID, struct.pack("<I", 0xFFFFF000))
    if metadata:
        entries += _entry(SEV_METADATA_GUID, struct.pack("<I", size - PAGE))
    if kernel_hashes:
        entries += _entry(HASHES_TABLE_GUID, struct.pack("<II", HASHES_PAGE_GPA + 0x400, 0x400))
    footer = struct.pack("<H", len(entries) + 18) + uuid.UUID(FOOTER_GUID).bytes_le
    table = entries + footer
    image[size - 32 - len(table) : size - 32] = table
    return bytes(image)


def library_digest(ovmf: Path, vcpus: int, vcpu_type: str, **kw: Any) -> str:
    digest: bytes = snp_guest.calc_launch_digest(
        SevMode.SEV_SNP,
        vcpus,
        CPU_SIGS[vcpu_type],
        str(ovmf),
        str(kw.get("kernel", "")),
        str(kw.get("initrd", "")),
        kw.get("append", ""),
        kw.get("guest_features", 0x1),
    )
    return digest.hex()


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


@pytest.fixture
def ovmf(tmp_path: Path) -> Path:
    path = tmp_path / "OVMF.fd"
    path.write_bytes(synthetic_ovmf())
    return path


@pytest.fixture
def amdsev(tmp_path: Path) -> Path:
    path = tmp_path / "AmdSev.fd"
    path.write_bytes(synthetic_ovmf(kernel_hashes=True))
    return path


@pytest.fixture
def boot_files(tmp_path: Path) -> tuple[Path, Path]:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"MZ kernel image " * 64)
    initrd.write_bytes(b"\x1f\x8b initrd " * 64)
    return kernel, initrd


# --- the digest --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vcpus", "vcpu_type", "features"),
    [(1, "EPYC-Milan", None), (4, "EPYC-Genoa", "0x1"), (2, "EPYC-Turin", "21")],
)
def test_digest_equals_the_library_function(
    cli: Any, ovmf: Path, vcpus: int, vcpu_type: str, features: str | None
) -> None:
    args: list[str | Path] = ["--ovmf", ovmf, "--vcpus", str(vcpus), "--vcpu-type", vcpu_type]
    if features is not None:
        args += ["--guest-features", features]
    code, out, err = cli("rv", "snp-measurement", *args)
    assert (code, err) == (0, "")
    expected = library_digest(ovmf, vcpus, vcpu_type, guest_features=int(features or "1", 16))
    assert out == expected + "\n"
    assert len(bytes.fromhex(out.strip())) == 48


def test_measured_direct_boot_equals_the_library_function(
    cli: Any, amdsev: Path, boot_files: tuple[Path, Path]
) -> None:
    kernel, initrd = boot_files
    base = ("rv", "snp-measurement", "--ovmf", amdsev, "--vcpus", "2", "--vcpu-type", "EPYC-v4")
    code, out, _ = cli(*base, "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0")
    assert code == 0
    expected = library_digest(
        amdsev, 2, "EPYC-v4", kernel=kernel, initrd=initrd, append="console=ttyS0"
    )
    assert out.strip() == expected
    # The command line is measured: another one gives another digest.
    _, other, _ = cli(*base, "--kernel", kernel, "--initrd", initrd, "--append", "quiet")
    _, no_kernel, _ = cli(*base)
    assert len({out, other, no_kernel}) == 3


def test_function_returns_the_library_bytes(ovmf: Path) -> None:
    digest = snp_launch_measurement(ovmf, vcpus=3, vcpu_type="EPYC-Rome")
    assert digest.hex() == library_digest(ovmf, 3, "EPYC-Rome")


@pytest.mark.skipif(not REAL_OVMF.exists(), reason=f"no real OVMF image at {REAL_OVMF}")
def test_real_ovmf_equals_the_library_function(cli: Any) -> None:
    code, out, _ = cli(
        "rv", "snp-measurement", "--ovmf", REAL_OVMF, "--vcpus", "2", "--vcpu-type", "EPYC-Milan"
    )
    assert code == 0
    assert out.strip() == library_digest(REAL_OVMF, 2, "EPYC-Milan")


# --- refused inputs ----------------------------------------------------------------------


def test_missing_ovmf(cli: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read OVMF"):
        snp_launch_measurement(tmp_path / "none.fd", vcpus=1, vcpu_type="EPYC")
    code, out, err = cli(
        "rv", "snp-measurement", "--ovmf", tmp_path / "none.fd", "--vcpus", "1",
        "--vcpu-type", "EPYC",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith("custodes: error: cannot read OVMF")


def test_ovmf_without_sev_metadata(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "plain.fd"
    path.write_bytes(synthetic_ovmf(metadata=False))
    with pytest.raises(OvmfInvalid, match="no SEV metadata"):
        snp_launch_measurement(path, vcpus=1, vcpu_type="EPYC")
    code, _, err = cli(
        "rv", "snp-measurement", "--ovmf", path, "--vcpus", "1", "--vcpu-type", "EPYC"
    )
    assert code == 1
    assert "cannot launch an SEV-SNP guest" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(PAGE), "no SEV metadata"),  # no footer table at all
        (b"\x00" * 100, "whole number of 4 KiB pages"),
        (b"", "whole number of 4 KiB pages"),
    ],
)
def test_not_an_ovmf_image(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "junk.fd"
    path.write_bytes(content)
    with pytest.raises(OvmfInvalid, match=message):
        snp_launch_measurement(path, vcpus=1, vcpu_type="EPYC")


def test_bad_metadata_signature(tmp_path: Path) -> None:
    image = bytearray(synthetic_ovmf())
    image[PAGE : PAGE + 4] = b"XSEV"
    path = tmp_path / "bad.fd"
    path.write_bytes(bytes(image))
    with pytest.raises(OvmfInvalid, match="SEV metadata"):
        snp_launch_measurement(path, vcpus=1, vcpu_type="EPYC")


def test_unknown_metadata_section_type(tmp_path: Path) -> None:
    image = bytearray(synthetic_ovmf())
    struct.pack_into("<I", image, PAGE + 16 + 8, 0x77)  # first section's type
    path = tmp_path / "odd.fd"
    path.write_bytes(bytes(image))
    with pytest.raises(OvmfInvalid):
        snp_launch_measurement(path, vcpus=1, vcpu_type="EPYC")


def test_kernel_with_a_non_amdsev_ovmf(cli: Any, ovmf: Path, boot_files: tuple[Path, Path]) -> None:
    kernel, _ = boot_files
    with pytest.raises(KernelHashesUnsupported):
        snp_launch_measurement(ovmf, vcpus=1, vcpu_type="EPYC", kernel=kernel)
    code, _, err = cli(
        "rv", "snp-measurement", "--ovmf", ovmf, "--vcpus", "1", "--vcpu-type", "EPYC",
        "--kernel", kernel,
    )  # fmt: skip
    assert code == 1
    assert "AmdSevX64.dsc" in err


def test_missing_kernel_file(amdsev: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read kernel"):
        snp_launch_measurement(amdsev, vcpus=1, vcpu_type="EPYC", kernel=tmp_path / "nope")


def test_function_checks_its_arguments(ovmf: Path) -> None:
    with pytest.raises(ConfigError, match="unknown vCPU type"):
        snp_launch_measurement(ovmf, vcpus=1, vcpu_type="Pentium")
    with pytest.raises(ConfigError, match="need --kernel"):
        snp_launch_measurement(ovmf, vcpus=1, vcpu_type="EPYC", append="quiet")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--vcpu-type", "Pentium"], "invalid choice: 'Pentium'"),
        (["--vcpu-type", "EPYC", "--vcpus", "0"], "between 1 and"),
        (["--vcpu-type", "EPYC", "--vcpus", "two"], "not a number"),
        (["--vcpu-type", "EPYC", "--guest-features", "xyz"], "not hex"),
        (["--vcpu-type", "EPYC", "--guest-features", "1" + "0" * 16], "64 bits"),
        (["--vcpu-type", "EPYC", "--initrd", "i.img"], "need --kernel"),
        (["--vcpu-type", "EPYC", "--append", "quiet"], "need --kernel"),
        (["--vcpu-type", "EPYC", "--expires", "2030-01-01T00:00:00Z"], "--register only"),
        (["--vcpu-type", "EPYC", "--register", "--expires", "soon"], "--expires"),
    ],
)
def test_usage_errors_exit_2(cli: Any, ovmf: Path, extra: list[str], message: str) -> None:
    args: list[str | Path] = ["--ovmf", ovmf, "--vcpus", "1", *extra]
    code, out, err = cli("rv", "snp-measurement", *args)
    assert (code, out) == (2, "")
    assert message in err


# --- registration ------------------------------------------------------------------------


def test_register_sends_the_digest_to_the_broker(cli: Any, ovmf: Path, broker: LiveBroker) -> None:
    key = broker.data_dir / "admin-key.pem"
    base = ("rv", "snp-measurement", "--ovmf", ovmf, "--vcpus", "2", "--vcpu-type", "EPYC-Milan")
    code, out, err = cli(*base, "--register", "--url", broker.url, "--key", key)
    assert code == 0
    digest = out.strip()
    assert digest == library_digest(ovmf, 2, "EPYC-Milan")
    assert f"registered reference value {DEFAULT_REFERENCE_VALUE}" in err
    code, _, _ = cli(
        *base, "--vcpus", "4", "--register", "custom_measurement", "--url", broker.url,
        "--key", key, "--expires", "2999-01-01T00:00:00Z",
    )  # fmt: skip
    assert code == 0
    with broker.admin() as admin:
        stored = admin.get_reference_value(DEFAULT_REFERENCE_VALUE)
        custom = admin.get_reference_value("custom_measurement")
    assert stored["value"] == [digest]
    assert custom["value"] == [library_digest(ovmf, 4, "EPYC-Milan")]
    assert custom["expiration"] == "2999-01-01T00:00:00Z"


def test_register_needs_a_key(cli: Any, ovmf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTODES_ADMIN_KEY", raising=False)
    code, out, err = cli(
        "rv", "snp-measurement", "--ovmf", ovmf, "--vcpus", "1", "--vcpu-type", "EPYC",
        "--register", "--url", "http://127.0.0.1:9",
    )  # fmt: skip
    assert code == 1
    assert len(out.strip()) == 96  # the digest is printed before registration is tried
    assert "no admin key" in err


def test_register_to_an_unreachable_broker(cli: Any, ovmf: Path, tmp_path: Path) -> None:
    key = tmp_path / "admin-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    code, _, err = cli(
        "rv", "snp-measurement", "--ovmf", ovmf, "--vcpus", "1", "--vcpu-type", "EPYC",
        "--register", "--url", "http://127.0.0.1:9", "--key", key,
    )  # fmt: skip
    assert code == 1
    assert "cannot reach the broker" in err
