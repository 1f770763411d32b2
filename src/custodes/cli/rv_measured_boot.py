"""`custodes rv measured-boot`: the reference values a clean UEFI measured boot of these
artifacts must produce (the measured-boot counterpart of ``rv snp-measurement``).

Computed from the files, not from a trusted first boot: the kernel's Authenticode digest (as
QEMU's direct boot hands the image to the firmware, unless ``--unpatched-kernel``), the
initrd's and the command line's digests as the Linux EFI stub measures them. Only the
firmware's PCR 0 is *recorded* (its volumes are measured after decompression): from
``--firmware-log`` or from the recordings custodes ships, and the output says so.

Prints an upstream RVPS ``sample`` message (``custodes admin reference-value register
--message FILE`` reads it); ``--register`` sends it to the broker instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from custodes.cli._common import add_url, admin_client, read_limited
from custodes.cli.admin_identity import add_credentials

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
DEFAULT_MEMORY_MIB = 512

EPILOG = """\
Examples:
  custodes rv measured-boot --firmware /usr/share/OVMF/OVMF_CODE_4M.fd \\
      --kernel vmlinuz --initrd initrd.img --cmdline 'console=ttyS0 quiet panic=-1'
  custodes rv measured-boot --firmware OVMF_CODE.fd --firmware-log boot.log \\
      --kernel vmlinuz --cmdline 'console=ttyS0' --register --url http://127.0.0.1:8080
"""


def add_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = actions.add_parser(
        "measured-boot",
        help="the reference values of a UEFI measured boot (TPM event log)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--firmware", type=Path, required=True, metavar="FD", help="OVMF_CODE image")
    m.add_argument(
        "--firmware-log",
        type=Path,
        metavar="LOG",
        help="TCG2 event log of a boot of this firmware (default: custodes' recordings)",
    )
    m.add_argument("--kernel", type=Path, required=True, metavar="K", help="the kernel (bzImage)")
    m.add_argument("--initrd", type=Path, metavar="I", help="the initrd")
    m.add_argument("--cmdline", default="", metavar="C", help="kernel command line (-append)")
    m.add_argument(
        "--qemu-memory",
        type=int,
        default=DEFAULT_MEMORY_MIB,
        metavar="MIB",
        help=f"guest RAM of the QEMU direct boot, MiB (default {DEFAULT_MEMORY_MIB})",
    )
    m.add_argument(
        "--unpatched-kernel",
        action="store_true",
        help="the kernel is measured as the file is (a boot loader, not QEMU -kernel)",
    )
    m.add_argument(
        "--register", action="store_true", help="register the values at the broker (--url)"
    )
    add_credentials(m, role="admin")
    add_url(m)
    m.set_defaults(func=run, usage_error=m.error)


def _read(path: Path, what: str) -> bytes:
    return read_limited(path, MAX_ARTIFACT_BYTES, what)


def run(args: argparse.Namespace) -> int:
    from custodes.rvps.measured_boot import recorded_firmware, reference_values

    if not 64 <= args.qemu_memory <= 1 << 20:
        args.usage_error("--qemu-memory must be between 64 and 1048576 MiB")
    firmware = recorded_firmware(
        _read(args.firmware, "firmware"),
        None if args.firmware_log is None else _read(args.firmware_log, "firmware log"),
    )
    values = reference_values(
        firmware=firmware,
        kernel=_read(args.kernel, "kernel"),
        initrd=None if args.initrd is None else _read(args.initrd, "initrd"),
        cmdline=args.cmdline,
        qemu_memory=None if args.unpatched_kernel else args.qemu_memory << 20,
    )
    print(f"measured_boot_firmware: {firmware.source}", file=sys.stderr)
    message = {
        "version": "0.1.0",
        "type": "sample",
        "payload": base64.b64encode(json.dumps(values).encode()).decode("ascii"),
    }
    if not args.register:
        print(json.dumps(message))
        for name, value in values.items():
            print(f"  {name} = {value}", file=sys.stderr)
        return 0
    with admin_client(args) as client:
        client.register_message(message)
    for name, value in values.items():
        print(f"registered reference value {name} = {value}", file=sys.stderr)
    return 0
