"""Boots the guest: QEMU (q35, OVMF, TCG unless told otherwise), a swtpm vTPM on a UNIX socket
(``tpm-crb``), the kernel and initramfs by direct boot, the host's root read-only over
virtio-9p, and one network path: QEMU user networking with ``restrict=on`` (the guest reaches
no host and no outside address) and a ``guestfwd`` that relays 10.0.2.100:8080 to the
broker's loopback port (:mod:`custodes.vm.relay`).

Every process (qemu and the relays it spawns, in their own process group; swtpm) and every
temporary file is removed when :func:`boot` returns, also on a timeout or an error.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from custodes.errors import ConfigError
from custodes.vm.initramfs import EXIT_MARKER
from custodes.vm.tpm import VirtualTpm

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"
DEFAULT_MEMORY_MIB = 512
GUEST_BROKER_URL = "http://10.0.2.100:8080"
_GUESTFWD = "tcp:10.0.2.100:8080"
_TIMING = re.compile(r"CUSTODES-VM-T (\S+) ([0-9.]+)")
_EXIT = re.compile(rf"{EXIT_MARKER} (\d+)")
_POLL_S = 0.02
_STOP_S = 5.0


@dataclass(frozen=True, slots=True)
class BootSpec:
    """What is booted: the artifacts the measured-boot reference values are computed from."""

    kernel: Path
    initrd: bytes
    cmdline: str = DEFAULT_CMDLINE
    firmware: Path = OVMF_CODE
    firmware_vars: Path = OVMF_VARS
    memory_mib: int = DEFAULT_MEMORY_MIB
    accel: str = "tcg"  # "kvm" where /dev/kvm works (nested KVM often does not)


@dataclass(frozen=True, slots=True)
class BootResult:
    """``status``: the job's exit status (None if the VM died or timed out before it ended).
    ``marks``: host seconds since power-on at which each ``CUSTODES-VM-T`` mark was printed,
    plus ``kernel_start`` (power-on + firmware) derived from the guest's uptime."""

    status: int | None
    console: str
    elapsed: float
    timed_out: bool
    marks: dict[str, float] = field(default_factory=dict)


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise ConfigError(f"{binary} is not installed (see scripts/setup-system: {package})")
    return found


def qemu_command(
    spec: BootSpec, *, workdir: Path, tpm_socket: Path, job_dir: Path, broker_port: int
) -> list[str]:
    """The QEMU command line (kept in one place: it is the VM's whole hardware)."""
    relay = f"{sys.executable} -m custodes.vm.relay {broker_port}"
    # multidevs=remap: the host's /proc, /sys, /dev... are other devices with colliding inode
    # numbers; without remapping, the guest sees their 9p directories as one inode and a mount
    # on /host/proc shows up on /host/sys too.
    return [
        _require("qemu-system-x86_64", "qemu-system-x86"),
        "-machine", f"q35,accel={spec.accel}",
        "-cpu", "max" if spec.accel == "tcg" else "host",
        "-m", str(spec.memory_mib),
        "-smp", "1",
        "-no-reboot",
        "-nodefaults",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{workdir / 'console.log'}",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={spec.firmware}",
        "-drive", f"if=pflash,format=raw,unit=1,file={workdir / 'vars.fd'}",
        "-chardev", f"socket,id=chrtpm,path={tpm_socket}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0",
        "-kernel", str(spec.kernel),
        "-initrd", str(workdir / "initrd.img"),
        "-append", spec.cmdline,
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={job_dir},mount_tag=job,security_model=none,readonly=on",
        "-netdev", f"user,id=n0,restrict=on,guestfwd={_GUESTFWD}-cmd:{relay}",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
    ]  # fmt: skip


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Terminate qemu and the relays it spawned (one process group), killing if needed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(_STOP_S)
    # relays still running after qemu exited belong to the group as well
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="custodes-vm-"))  # mode 0700
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def boot(
    spec: BootSpec,
    tpm: VirtualTpm,
    *,
    job_script: str,
    broker_port: int,
    timeout: float = 300.0,
    console_copy: Path | None = None,
) -> BootResult:
    """Power on, run ``job_script`` (a POSIX shell script run chrooted in the host's root),
    wait for power-off or ``timeout`` seconds; everything started is stopped."""
    with _workdir() as workdir:
        shutil.copyfile(spec.firmware_vars, workdir / "vars.fd")  # the VM may write its VARS
        (workdir / "initrd.img").write_bytes(spec.initrd)
        job_dir = workdir / "job"
        job_dir.mkdir(mode=0o755)
        (job_dir / "job.sh").write_text(job_script)
        console = workdir / "console.log"
        with tpm.serve_for_qemu(workdir) as tpm_socket:
            command = qemu_command(
                spec,
                workdir=workdir,
                tpm_socket=tpm_socket,
                job_dir=job_dir,
                broker_port=broker_port,
            )
            started = time.monotonic()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            marks: dict[str, float] = {}
            timed_out = False
            try:
                seen = 0
                while process.poll() is None:
                    now = time.monotonic() - started
                    if now > timeout:
                        timed_out = True
                        break
                    seen = _scan_marks(console, seen, now, marks)
                    time.sleep(_POLL_S)
                _scan_marks(console, seen, time.monotonic() - started, marks)
            finally:
                _stop_group(process)
            elapsed = time.monotonic() - started
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            if process.stderr:
                process.stderr.close()
        text = console.read_text(errors="replace") if console.exists() else ""
        if console_copy is not None:
            console_copy.write_text(text)
        exit_match = _EXIT.search(text)
        if exit_match is None and not timed_out and not text:
            raise ConfigError(f"the VM did not start: {stderr.strip() or 'no console output'}")
        return BootResult(
            status=int(exit_match.group(1)) if exit_match else None,
            console=text,
            elapsed=elapsed,
            timed_out=timed_out,
            marks=marks,
        )


def _scan_marks(console: Path, seen: int, now: float, marks: dict[str, float]) -> int:
    """Record the host time of each new ``CUSTODES-VM-T name uptime`` line; returns the
    number of console bytes read so far."""
    try:
        with console.open("rb") as f:
            f.seek(seen)
            chunk = f.read()
    except FileNotFoundError:
        return seen
    end = chunk.rfind(b"\n") + 1
    for match in _TIMING.finditer(chunk[:end].decode(errors="replace")):
        name, uptime = match.group(1), float(match.group(2))
        marks.setdefault(name, now)
        if name == "kernel":
            marks.setdefault("kernel_start", now - uptime)
    return seen + end
