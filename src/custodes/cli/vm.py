"""`custodes vm`: a real virtual machine (QEMU, OVMF, a swtpm vTPM, the Debian kernel, a
project-built initramfs) whose workload receives secrets only after a measured boot the
workload admin approved (docs/vm.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from custodes.errors import ConfigError

EPILOG = """\
Examples:
  custodes vm fetch-kernel                 # or scripts/setup-vm
  custodes vm initramfs --out initrd.img   # the initramfs the VM boots (deterministic)
  custodes vm demo                         # approved boot, then tampered boots refused
  custodes vm demo --console-dir consoles/ # keep each VM's serial console
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "vm",
        help="a measured VM with a vTPM: demo, kernel, initramfs",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser(
        "fetch-kernel",
        help="download and unpack linux-image-amd64",
        description="Download Debian's linux-image-amd64 (apt-get download) and unpack it "
        "(dpkg-deb -x) into $CUSTODES_VM_CACHE or ~/.cache/custodes/vm.",
        examples=["custodes vm fetch-kernel", "CUSTODES_VM_CACHE=/srv/vm custodes vm fetch-kernel"],
    )
    f.set_defaults(func=_fetch_kernel)
    i = actions.add_parser(
        "initramfs",
        help="write the guest initramfs",
        description="Write the initramfs the VM boots (deterministic: the same kernel modules "
        "and busybox give the same bytes, whose SHA-256 is the initrd reference value).",
        examples=["custodes vm initramfs --out initrd.img"],
    )
    i.add_argument("--out", type=Path, required=True, metavar="FILE", help="write it to FILE")
    i.set_defaults(func=_initramfs)
    d = actions.add_parser(
        "demo",
        help="approved boot gets the secret; tampered boots refused",
        description="Boot the approved VM (it receives the secret), then VMs with another "
        "command line, initrd, firmware or TPM, and a replayed quote (all refused).",
        examples=["custodes vm demo", "custodes vm demo --console-dir consoles/"],
    )
    d.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="QEMU accelerator")
    d.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per-VM timeout (300)")
    d.add_argument("--console-dir", type=Path, metavar="DIR", help="keep each VM's console")
    d.set_defaults(func=_demo)


def _fetch_kernel(args: argparse.Namespace) -> int:
    from custodes.vm.kernel import fetch_kernel

    kernel = fetch_kernel()
    print(f"kernel {kernel.version}: {kernel.vmlinuz}")
    return 0


def _initramfs(args: argparse.Namespace) -> int:
    from custodes.vm.initramfs import build_initramfs
    from custodes.vm.kernel import find_kernel

    data = build_initramfs(find_kernel())
    try:
        args.out.write_bytes(data)
    except OSError as e:
        raise ConfigError(f"cannot write {args.out}: {e.strerror or e}") from e
    print(f"wrote {args.out} ({len(data)} bytes)", file=sys.stderr)
    return 0


def _say(step: str, text: str) -> None:
    print(f"== {step}" if step else f"   {text}", flush=True)


def _demo(args: argparse.Namespace) -> int:
    from custodes.vm.scenario import run_demo

    if args.console_dir is not None:
        args.console_dir.mkdir(parents=True, exist_ok=True)
    return run_demo(_say, accel=args.accel, timeout=args.timeout, console_dir=args.console_dir)
