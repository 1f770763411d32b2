"""The VM harness's own parts: the newc cpio writer (read back by the system's cpio), the
guestfwd relay (a real subprocess relaying to a real loopback server), the QEMU command
line's network and sharing restrictions, and the initramfs builder."""

from __future__ import annotations

import gzip
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.vm.cpio import CpioWriter
from custodes.vm.initramfs import EXIT_MARKER, WANTED_MODULES, build_initramfs, module_files
from custodes.vm.kernel import Kernel
from custodes.vm.machine import BootSpec, qemu_command


def test_cpio_archive_unpacks_with_the_system_cpio(tmp_path: Path) -> None:
    cpio = shutil.which("cpio")
    assert cpio is not None, "cpio is installed by scripts/setup-system"
    archive = CpioWriter()
    archive.directory("bin")
    archive.file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)
    archive.file("odd", b"x" * 5)  # a length that needs padding
    archive.symlink("bin/sh", "tool")
    data = archive.finish()
    assert len(data) % 4 == 0
    out = tmp_path / "root"
    out.mkdir()
    subprocess.run([cpio, "-id", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "bin" / "tool").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (out / "odd").read_bytes() == b"xxxxx"
    assert (out / "bin" / "sh").is_symlink() and (out / "bin" / "sh").readlink() == Path("tool")


def test_cpio_archives_are_deterministic() -> None:
    def build() -> bytes:
        archive = CpioWriter()
        archive.file("a", b"1")
        return archive.finish()

    assert build() == build()


def test_relay_forwards_both_ways_to_the_loopback_port() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            received.append(data)
            conn.sendall(b"answer:" + data[:10])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "custodes.vm.relay", str(port)],
            input=b"request " * 20000,  # larger than one read
            capture_output=True,
            timeout=30,
            check=False,
        )
    finally:
        thread.join(10)
        server.close()
    assert done.returncode == 0, done.stderr
    assert received == [b"request " * 20000]
    assert done.stdout == b"answer:request re"


def test_relay_without_a_listener_fails_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        done = subprocess.run(
            [sys.executable, "-m", "custodes.vm.relay", str(port)],
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode().startswith("custodes vm relay: ")


@pytest.mark.parametrize("argv", [[], ["x"], ["1", "2"]])
def test_relay_usage(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "custodes.vm.relay", *argv], capture_output=True, check=False
    )
    assert done.returncode == 2


def test_qemu_command_restricts_the_network_and_the_shares(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (scripts/setup-system)")
    spec = BootSpec(kernel=tmp_path / "vmlinuz", initrd=b"")
    command = qemu_command(
        spec, workdir=tmp_path, tpm_socket=tmp_path / "s", job_dir=tmp_path / "job", broker_port=4
    )
    netdevs = [command[i + 1] for i, arg in enumerate(command) if arg == "-netdev"]
    assert len(netdevs) == 1
    assert "restrict=on" in netdevs[0].split(",")
    assert netdevs[0].count("guestfwd=") == 1
    assert netdevs[0].endswith("-m custodes.vm.relay 4")
    shares = [command[i + 1] for i, arg in enumerate(command) if arg == "-virtfs"]
    assert shares and all("readonly=on" in share.split(",") for share in shares)
    assert "-nodefaults" in command and "tpm-crb,tpmdev=tpm0" in command


# --- the initramfs --------------------------------------------------------------------------


def _fake_kernel(tmp_path: Path, modules: dict[str, str]) -> Kernel:
    """A kernel tree whose .ko files carry only their .modinfo ``depends=`` line."""
    root = tmp_path / "lib" / "modules" / "6.1.0-test"
    for name, depends in modules.items():
        path = root / "kernel" / "drivers" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF...\x00license=GPL\x00depends=" + depends.encode() + b"\x00")
    return Kernel(version="6.1.0-test", vmlinuz=tmp_path / "vmlinuz", modules=root)


def test_module_dependencies_come_first(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path, {"a": "b,c", "b": "c", "c": "", "d": "a", "unused": ""})
    order = [path.stem for path in module_files(kernel, ("d", "b"))]
    assert order == ["c", "b", "a", "d"]


def test_a_missing_module_is_a_config_error(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path, {"a": "gone"})
    with pytest.raises(ConfigError, match="no module gone"):
        module_files(kernel, ("a",))


def test_the_initramfs_holds_init_busybox_and_modules(tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    cpio = shutil.which("cpio")
    assert busybox is not None and cpio is not None, "scripts/setup-system installs them"
    kernel = _fake_kernel(tmp_path, {name: "" for name in WANTED_MODULES})
    image = build_initramfs(kernel, Path(busybox), extra_files={"etc/extra": b"x"})
    assert image == build_initramfs(kernel, Path(busybox), extra_files={"etc/extra": b"x"})
    out = tmp_path / "root"
    out.mkdir()
    subprocess.run([cpio, "-id", "--quiet"], input=gzip.decompress(image), cwd=out, check=True)
    init = (out / "init").read_text()
    assert init.startswith("#!/bin/busybox sh") and EXIT_MARKER in init
    assert (out / "bin" / "busybox").read_bytes() == Path(busybox).read_bytes()
    assert (out / "modules.order").read_text().split() == list(WANTED_MODULES)
    assert (out / "etc" / "extra").read_bytes() == b"x"


def test_a_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    kernel = _fake_kernel(tmp_path, {name: "" for name in WANTED_MODULES})
    dynamic = Path(sys.executable).resolve()  # a dynamically linked ELF
    with pytest.raises(ConfigError, match="dynamically linked"):
        build_initramfs(kernel, dynamic)


def test_the_hosts_tmp_stays_visible_to_the_guest() -> None:
    """A checkout (and its virtualenv) under /tmp must be reachable from the guest: the init
    script mounts nothing over the host's /tmp and gives the job a TMPDIR on its own tmpfs."""
    from custodes.vm.initramfs import INIT_SCRIPT

    mounts = [line.split()[-1] for line in INIT_SCRIPT.splitlines() if line.startswith("mount ")]
    assert "/host/tmp" not in mounts
    assert "/host/run" in mounts
    assert "chmod 1777 /host/run/tmp" in INIT_SCRIPT
