"""The guest's initramfs, built by the project: busybox (static), the kernel modules for
virtio-pci, virtio-net and virtio-9p (with their dependencies, read from each module's
``.modinfo`` because a package unpacked without its postinst has no ``modules.dep``), and an
``/init`` that:

1. mounts /proc, /sys, /dev and securityfs, loads the modules;
2. mounts the host's root read-only over virtio-9p at /host (tag ``host``) and the job
   directory (tag ``job``) at /host/run/custodes-job, with a tmpfs over /host/run (the job's
   TMPDIR is /run/tmp: the host's /tmp stays visible, read-only, so a checkout under /tmp runs);
3. configures the NIC with the address QEMU user networking expects (10.0.2.15/24);
4. runs ``/host/run/custodes-job/job.sh`` chrooted into /host (the job calls ``custodes run``);
5. prints ``CUSTODES-VM-EXIT <status>`` on the console and powers the VM off.

The archive is deterministic for given inputs (fixed times and order), so its digest, which
the Linux EFI stub measures into PCR 9, is a reference value computable on the host.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from custodes.errors import ConfigError
from custodes.vm.cpio import CpioWriter
from custodes.vm.kernel import Kernel

# The modules /init loads; their dependencies are added before them.
WANTED_MODULES = ("virtio_pci", "virtio_net", "9pnet_virtio", "9p")
EXIT_MARKER = "CUSTODES-VM-EXIT"
JOB_MOUNT = "/run/custodes-job"
GUEST_ADDRESS = "10.0.2.15/24"
_DEPENDS = re.compile(rb"(?:^|\x00)depends=([A-Za-z0-9_,-]*)\x00")

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "CUSTODES-VM-T kernel $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.order); do insmod "/modules/$m.ko" || echo "insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose host /host || poweroff -f
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /host/run
mkdir -p /host/run/tmp
chmod 1777 /host/run/tmp
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /host/dev/shm
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t securityfs securityfs /host/sys/kernel/security
mkdir -p /host{JOB_MOUNT}
mount -t 9p -o trans=virtio,version=9p2000.L,ro job /host{JOB_MOUNT}
ip link set lo up
ip link set eth0 up
ip addr add {GUEST_ADDRESS} dev eth0
ip route add default dev eth0
echo "CUSTODES-VM-T userspace $(cut -d' ' -f1 /proc/uptime)"
chroot /host /bin/sh {JOB_MOUNT}/job.sh
echo "{EXIT_MARKER} $?"
poweroff -f
"""


def module_files(kernel: Kernel, wanted: tuple[str, ...] = WANTED_MODULES) -> list[Path]:
    """The .ko files of ``wanted`` and of everything they depend on, dependencies first."""
    index = {path.name.removesuffix(".ko"): path for path in kernel.modules.rglob("*.ko")}
    order: list[Path] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        path = index.get(name) or index.get(name.replace("_", "-"))
        if path is None:
            raise ConfigError(f"the kernel {kernel.version} has no module {name}")
        if path in order or name in visiting:
            return
        visiting.add(name)
        found = _DEPENDS.search(path.read_bytes())
        for dep in found.group(1).decode().split(",") if found else []:
            if dep:
                visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF has a PT_INTERP program header (is dynamic)."""
    if elf[:4] != b"\x7fELF" or len(elf) < 64:
        raise ConfigError("busybox is not an ELF executable")
    phoff = int.from_bytes(elf[32:40], "little")
    phentsize = int.from_bytes(elf[54:56], "little")
    phnum = int.from_bytes(elf[56:58], "little")
    return any(
        int.from_bytes(elf[phoff + i * phentsize : phoff + i * phentsize + 4], "little") == 3
        for i in range(phnum)
    )


def build_initramfs(
    kernel: Kernel,
    busybox: Path | None = None,
    *,
    extra_files: Mapping[str, bytes] | None = None,
) -> bytes:
    """The gzip-compressed newc archive (deterministic: no timestamps, fixed order)."""
    found = busybox or (Path(p) if (p := shutil.which("busybox")) else None)
    if found is None or not found.is_file():
        raise ConfigError("busybox is not installed (apt install busybox-static)")
    binary = found.read_bytes()
    if _has_interpreter(binary):
        raise ConfigError(f"{found} is dynamically linked; install busybox-static")
    archive = CpioWriter()
    for directory in ("bin", "dev", "proc", "sys", "host", "modules"):
        archive.directory(directory)
    archive.file("bin/busybox", binary, 0o755)
    modules = module_files(kernel)
    for path in modules:
        archive.file(f"modules/{path.name}", path.read_bytes())
    order = "".join(f"{path.name.removesuffix('.ko')}\n" for path in modules)
    archive.file("modules.order", order.encode())
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    for name, data in sorted((extra_files or {}).items()):
        parent = name.rpartition("/")[0]
        if parent:
            archive.directory(parent)
        archive.file(name, data)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)
