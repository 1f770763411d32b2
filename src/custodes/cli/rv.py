"""`custodes rv`: compute reference values from the artefacts a guest is launched with.

``custodes rv snp-measurement`` computes the SEV-SNP launch measurement (the report's
MEASUREMENT) of a guest that QEMU starts with a given OVMF, vCPU count and type, and
optionally a measured kernel, initrd and command line, using the ``sev-snp-measure`` package as
a library. With ``--register`` the digest is sent to the broker as a reference value, by
default ``snp_launch_measurement`` (what the default ``snp`` policy rule reads).

Before the library runs, the OVMF image is checked for what an SNP launch needs, because the
library otherwise computes a digest silently for firmware that cannot launch an SNP guest: an
SEV metadata table with known section types, the SEV-ES reset block, and, when a kernel is
measured, the SNP kernel-hashes section and the hashes-table location (only OVMF built from
``OvmfPkg/AmdSev/AmdSevX64.dsc`` has them).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sevsnpmeasure.vcpu_types import CPU_SIGS  # type: ignore[import-untyped]

from custodes.cli import rv_measured_boot, rv_nvidia_rim
from custodes.cli._common import add_url, admin_client
from custodes.cli.admin_identity import add_credentials
from custodes.errors import ConfigError

# The measurement library, the admin client and the time parser are imported by the handlers:
# `--help` stays light (sevsnpmeasure.vcpu_types is a table).

DEFAULT_REFERENCE_VALUE: Final = "snp_launch_measurement"
DEFAULT_GUEST_FEATURES: Final = 0x1  # sev-snp-measure's default (SNPActive)
PAGE_SIZE: Final = 4096
MAX_OVMF_BYTES: Final = 64 * 1024 * 1024  # real images are 2 to 4 MiB
MAX_VCPUS: Final = 4096
VCPU_TYPES: Final[tuple[str, ...]] = tuple(sorted(CPU_SIGS))
# What the library raises from its parsers and asserts: any of these means the input is bad.
_LIBRARY_ERRORS: Final = (ValueError, RuntimeError, AssertionError, KeyError, IndexError)


class OvmfInvalid(ConfigError):
    """The OVMF image cannot launch an SEV-SNP guest (no SEV metadata, no reset block, ...)."""

    code = "ovmf-invalid"


class KernelHashesUnsupported(ConfigError):
    """A kernel was given but the OVMF image has no SNP kernel-hashes section (not AmdSev)."""

    code = "ovmf-no-kernel-hashes"


EPILOG = """\
Examples:
  custodes rv snp-measurement --ovmf OVMF.fd --vcpus 2 --vcpu-type EPYC-Genoa
  custodes rv snp-measurement --ovmf AmdSev.fd --vcpus 4 --vcpu-type EPYC-Milan \\
      --kernel vmlinuz --initrd initrd.img --append 'console=ttyS0' \\
      --register --url https://broker:8080 --key admin-key.pem
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "rv",
        help="compute reference values (SNP launch, measured boot, NVIDIA RIMs)",
        description="Compute reference values offline and, optionally, register them.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    m = actions.add_parser(
        "snp-measurement",
        help="the expected SEV-SNP launch measurement of a QEMU guest",
        description=(
            "Print the expected SEV-SNP launch measurement (hex, 48 bytes) of a guest "
            "launched by QEMU with this OVMF, vCPUs and (optionally) measured direct boot. "
            "Computed with sev-snp-measure; no network unless --register."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--ovmf", type=Path, required=True, metavar="FILE", help="OVMF firmware image")
    m.add_argument("--vcpus", type=_vcpus, required=True, metavar="N", help="number of guest vCPUs")
    m.add_argument(
        "--vcpu-type",
        required=True,
        choices=VCPU_TYPES,
        metavar="TYPE",
        help=f"QEMU vCPU model: {', '.join(VCPU_TYPES)}",
    )
    m.add_argument("--kernel", type=Path, metavar="K", help="kernel measured by OVMF (AmdSev)")
    m.add_argument("--initrd", type=Path, metavar="I", help="initrd (needs --kernel)")
    m.add_argument("--append", metavar="A", help="kernel command line (needs --kernel)")
    m.add_argument(
        "--guest-features",
        type=_guest_features,
        default=DEFAULT_GUEST_FEATURES,
        metavar="HEX",
        help=f"SEV_FEATURES of the guest's VMSA, hex (default {DEFAULT_GUEST_FEATURES:#x})",
    )
    reg = m.add_argument_group("registering the value at the broker")
    reg.add_argument(
        "--register",
        nargs="?",
        const=DEFAULT_REFERENCE_VALUE,
        metavar="NAME",
        help=f"register the digest as reference value NAME (default {DEFAULT_REFERENCE_VALUE})",
    )
    add_credentials(reg, role="admin")
    reg.add_argument("--expires", help="RFC 3339 time after which the value is not used")
    add_url(m)
    m.set_defaults(func=_snp_measurement, usage_error=m.error)
    rv_measured_boot.add_parser(actions)
    rv_nvidia_rim.add_parser(actions)


def _vcpus(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= n <= MAX_VCPUS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_VCPUS}")
    return n


def _guest_features(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError("must fit 64 bits")
    return value


def _readable(path: Path, what: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e


def _check_ovmf(path: Path, *, measured_kernel: bool) -> None:
    """``OvmfInvalid`` / ``KernelHashesUnsupported`` unless this OVMF can launch the guest."""
    _readable(path, "OVMF")
    size = path.stat().st_size
    if size == 0 or size % PAGE_SIZE or size > MAX_OVMF_BYTES:
        raise OvmfInvalid(
            f"{path} is not an OVMF image: {size} bytes is not a whole number of 4 KiB pages "
            f"up to {MAX_OVMF_BYTES} bytes"
        )
    from sevsnpmeasure.ovmf import OVMF, SectionType  # type: ignore[import-untyped]

    try:
        ovmf = OVMF(str(path))
    except (OSError, *_LIBRARY_ERRORS) as e:
        raise OvmfInvalid(f"{path}: unreadable OVMF footer or SEV metadata: {e}") from e
    items = ovmf.metadata_items()
    if not items:
        raise OvmfInvalid(
            f"{path} has no SEV metadata (OVMF_SEV_META_DATA): it cannot launch an SEV-SNP "
            "guest; use an OVMF built with SEV-SNP support"
        )
    try:
        types = {item.section_type() for item in items}
        ovmf.sev_es_reset_eip()
    except _LIBRARY_ERRORS as e:
        raise OvmfInvalid(f"{path}: {e}") from e
    if measured_kernel and (
        SectionType.SNP_KERNEL_HASHES not in types or not ovmf.is_sev_hashes_table_supported()
    ):
        raise KernelHashesUnsupported(
            f"{path} cannot measure a kernel (no SNP kernel-hashes section): measured direct "
            "boot needs OVMF built from OvmfPkg/AmdSev/AmdSevX64.dsc"
        )


def snp_launch_measurement(
    ovmf: Path,
    *,
    vcpus: int,
    vcpu_type: str,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    guest_features: int = DEFAULT_GUEST_FEATURES,
) -> bytes:
    """The 48-byte SNP launch digest of a QEMU guest (``sev-snp-measure``, mode ``snp``).

    ``ConfigError`` for unreadable inputs or an unknown vCPU type, :class:`OvmfInvalid` for
    firmware that cannot launch an SNP guest, :class:`KernelHashesUnsupported` for a kernel
    with firmware that cannot measure one.
    """
    from sevsnpmeasure import guest as snp_guest  # type: ignore[import-untyped]
    from sevsnpmeasure.sev_mode import SevMode  # type: ignore[import-untyped]

    if vcpu_type not in CPU_SIGS:
        raise ConfigError(f"unknown vCPU type {vcpu_type!r}; known: {', '.join(VCPU_TYPES)}")
    if kernel is None and (initrd is not None or append is not None):
        raise ConfigError("--initrd and --append need --kernel")
    _check_ovmf(ovmf, measured_kernel=kernel is not None)
    for path, what in ((kernel, "kernel"), (initrd, "initrd")):
        if path is not None:
            _readable(path, what)
    try:
        digest = snp_guest.calc_launch_digest(
            SevMode.SEV_SNP,
            vcpus,
            CPU_SIGS[vcpu_type],
            str(ovmf),
            str(kernel) if kernel is not None else "",
            str(initrd) if initrd is not None else "",
            append or "",
            guest_features,
        )
    except OSError as e:
        raise ConfigError(f"cannot read an input file: {e}") from e
    except _LIBRARY_ERRORS as e:
        raise OvmfInvalid(f"sev-snp-measure refused the inputs: {e}") from e
    if not isinstance(digest, bytes) or len(digest) != 48:
        raise OvmfInvalid("sev-snp-measure returned no 48-byte digest")
    return digest


def _snp_measurement(args: argparse.Namespace) -> int:
    from custodes.cli._evidence_input import parse_time

    if args.kernel is None and (args.initrd is not None or args.append is not None):
        args.usage_error("--initrd and --append need --kernel")
    expiration = None
    if args.expires is not None:
        if args.register is None:
            args.usage_error("--expires applies to --register only")
        try:
            expiration = datetime.fromtimestamp(parse_time(args.expires), UTC)
        except ValueError as e:
            args.usage_error(f"--expires: {e}")
    digest = snp_launch_measurement(
        args.ovmf,
        vcpus=args.vcpus,
        vcpu_type=args.vcpu_type,
        kernel=args.kernel,
        initrd=args.initrd,
        append=args.append,
        guest_features=args.guest_features,
    )
    value = digest.hex()
    print(value)
    if args.register is not None:
        with admin_client(args) as client:
            client.register_reference_values({args.register: [value]}, expiration=expiration)
        print(f"registered reference value {args.register} = [{value}]", file=sys.stderr)
    return 0
