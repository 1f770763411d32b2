"""A real software TPM 2.0 (swtpm) for tests: fresh state, free loopback ports, always stopped.

Use it from any test under ``tests/`` as::

    from swtpm import running_swtpm

    with running_swtpm() as tpm:
        attester = TpmAttester(tpm.tcti)  # "swtpm:host=127.0.0.1,port=N"

Why the plain import works without ``__init__.py`` files: in pytest's default ``prepend``
import mode, the directory of every ``conftest.py`` pytest loads is put on ``sys.path``, and
``tests/conftest.py`` is loaded for every test under ``tests/``, so ``tests/`` is importable.
mypy resolves it the same way (each ``tests/`` file is a top-level module).

The swtpm runs as ``swtpm socket --tpm2`` on a data port P and a control port P+1 (the
``swtpm`` TCTI uses both), with ``not-need-init,startup-clear`` so it is ready for commands.
A start that loses a race for the ports is retried on other ports. On exit the process is
terminated (killed if it lingers) and its state directory removed, also when the test failed.
swtpm has no resource manager: callers must flush the transient objects they load.
swtpm, swtpm_ioctl and tpm2_startup come from system packages (``scripts/setup-system``); a
missing binary is an error, not a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
_START_ATTEMPTS = 5
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Swtpm:
    """A running swtpm."""

    port: int
    state_dir: Path
    pid: int

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def tcti(self) -> str:
        """The TCTI string for tpm2-pytss and tpm2-tools."""
        return f"swtpm:host={HOST},port={self.port}"

    def reset(self) -> None:
        """A TPM Reset: power cycle (``TPM_Init``) then ``TPM2_Startup(CLEAR)``.

        PCRs return to their initial values and saved contexts of transient objects become
        unloadable, as after a reboot.
        """
        subprocess.run(
            ["swtpm_ioctl", "--tcp", f"{HOST}:{self.ctrl_port}", "-i"],
            check=True,
            capture_output=True,
            timeout=_STOP_TIMEOUT_S,
        )
        subprocess.run(
            ["tpm2_startup", "--clear", "--tcti", self.tcti],
            check=True,
            capture_output=True,
            timeout=_STOP_TIMEOUT_S,
        )


def _port_pair() -> int:
    """A port P such that P and P+1 were both free a moment ago."""
    for _ in range(50):
        with closing(socket.socket()) as first:
            first.bind((HOST, 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with closing(socket.socket()) as second:
                try:
                    second.bind((HOST, port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of loopback ports")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT_S)


def _start(state_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("swtpm")
    if binary is None:
        raise RuntimeError("swtpm is not installed (see scripts/setup-system)")
    log = state_dir / "swtpm.log"
    failures = []
    for _ in range(_START_ATTEMPTS):
        port = _port_pair()
        command = [
            binary,
            "socket",
            "--tpm2",
            "--server",
            f"type=tcp,port={port},bindaddr={HOST}",
            "--ctrl",
            f"type=tcp,port={port + 1},bindaddr={HOST}",
            "--tpmstate",
            f"dir={state_dir}",
            "--flags",
            "not-need-init,startup-clear",
            "--log",
            f"file={log}",
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break  # most likely lost the ports to another process: try others
            if _accepts(port) and _accepts(port + 1):
                return process, port
            time.sleep(0.02)
        _stop(process)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        failures.append(f"port {port}: exit {process.returncode}: {stderr.strip()}")
    raise RuntimeError("swtpm did not start: " + "; ".join(failures))


@contextmanager
def running_swtpm() -> Iterator[Swtpm]:
    """A fresh swtpm (empty state) for the duration of the ``with`` block."""
    state_dir = Path(tempfile.mkdtemp(prefix="custodes-swtpm-"))
    try:
        process, port = _start(state_dir)
        try:
            yield Swtpm(port=port, state_dir=state_dir, pid=process.pid)
        finally:
            _stop(process)
            if process.stderr:
                process.stderr.close()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
