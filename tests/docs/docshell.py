"""One bash process per document: the blocks of a walkthrough share its variables, working
directory and background jobs, as they would in a reader's terminal.

The working directory is a fresh temporary directory that looks like the checkout (its
directories, a symbolic link to each file, ``.venv`` to the virtualenv running the tests), so
the docs' repository-relative paths work and what a walkthrough writes stays there.
``custodes`` is on ``PATH`` from that virtualenv. Where the system allows it (root, or
unprivileged user namespaces), bash runs in a network namespace of its own: the docs can use
the broker's documented default address, 127.0.0.1:8080, and walkthroughs never collide with
each other or with anything else on the machine.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
_SKIP = frozenset({".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "custodes-data"})
_DONE = re.compile(rb"__doc_test_done__ (\d+) (\d+)\n")

# Brings up the loopback interface of a new network namespace (SIOCGIFFLAGS, SIOCSIFFLAGS;
# struct ifreq is 40 bytes), without depending on iproute2.
_LOOPBACK_UP = """
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
name = b"lo"
flags = struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", name, 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", name, flags | 1))
"""


@dataclass(frozen=True)
class Outcome:
    status: int
    output: str  # stdout and stderr together, as a terminal shows them
    shell_exited: bool  # errexit ended the walkthrough


def private_network_prefix() -> list[str]:
    """The command prefix that runs a process in a new network namespace, or [] if the system
    does not allow it (then the walkthroughs share the machine's loopback)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    candidates = [[unshare, "--user", "--map-root-user", "--net"]]
    if os.geteuid() == 0:
        candidates.insert(0, [unshare, "--net"])
    for prefix in candidates:
        probe = subprocess.run([*prefix, "true"], capture_output=True, check=False, timeout=10)
        if probe.returncode == 0:
            return prefix
    return []


def walkthrough_env(home: Path) -> dict[str, str]:
    """The environment of a walkthrough: the caller's, minus any ``CUSTODES_*`` setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODES_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["HOME"] = str(home)
    env["COLUMNS"] = "80"  # argparse wraps --help to this, as on a terminal without a size
    env["LC_ALL"] = "C.UTF-8"
    return env


def checkout_view(work: Path) -> None:
    """Make ``work`` look like the checkout: its directories, with a link to each file. What
    a walkthrough creates, deletes or replaces (``sed -i``, ``mv``) stays in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    for top, dirs, files in os.walk(REPO):
        here = work / Path(top).relative_to(REPO)
        dirs[:] = [d for d in dirs if d not in _SKIP and d != "__pycache__"]
        for d in dirs:
            source = Path(top) / d
            if source.is_symlink():
                (here / d).symlink_to(source)
            else:
                (here / d).mkdir()
        for f in files:
            (here / f).symlink_to(Path(top) / f)
    (work / ".venv").symlink_to(Path(sys.prefix))


class Walkthrough:
    """A bash process that runs a document's blocks one after the other."""

    def __init__(self, root: Path, *, network_prefix: list[str]) -> None:
        self.work = root / "work"
        self.scratch = root / "doc-test"
        self.scratch.mkdir(parents=True)
        checkout_view(self.work)
        home = self.scratch / "home"
        home.mkdir(mode=0o700)
        self._proc = subprocess.Popen(
            [*network_prefix, "bash", "--noprofile", "--norc"],
            cwd=self.work,
            env=walkthrough_env(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: background jobs end with it
        )
        self._buffer = b""
        self._count = 0
        self._status = 0
        if network_prefix:
            loopback = self.scratch / "loopback.py"
            loopback.write_text(_LOOPBACK_UP)
            up = self.run(f'"{sys.executable}" "{loopback}"', errexit=True, timeout=20)
            if up.status != 0:
                raise RuntimeError(f"cannot bring up the loopback interface: {up.output}")

    def __enter__(self) -> Walkthrough:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, script: str, *, errexit: bool, timeout: float) -> Outcome:
        """Run ``script`` in the shell. With ``errexit`` a failing command ends the shell
        (``set -e -o pipefail``), as it ends the walkthrough; ``$?`` is carried from one call
        to the next, so that a console ``$ echo $?`` shows the previous command's status."""
        self._count += 1
        n = self._count
        unit = self.scratch / f"block-{n}.sh"
        out = self.scratch / f"block-{n}.out"
        unit.write_text(script + "\n")
        mode = "-e" if errexit else "+e"
        source = f'. "{unit}" > "{out}" 2>&1 < /dev/null'
        # In the branches of an `if`, $? is the condition's status: the previous block's.
        line = (
            f"set {mode} -o pipefail; if (exit {self._status}); then {source}; else {source}; fi; "
            f'__doc_test_status=$?; set +e; echo "__doc_test_done__ {n} $__doc_test_status"\n'
        )
        if self._proc.poll() is not None or self._proc.stdin is None:
            raise RuntimeError("the walkthrough's shell has already exited")
        self._proc.stdin.write(line.encode())
        self._proc.stdin.flush()
        done = self._wait_for(n, time.monotonic() + timeout)
        output = out.read_text(errors="replace") if out.exists() else ""
        if done is None:
            status = self._proc.wait(timeout=10)
            return Outcome(status, output, shell_exited=True)
        self._status = done
        return Outcome(done, output, shell_exited=False)

    def partial_output(self) -> str:
        """What the last block printed so far (for a block that timed out)."""
        out = self.scratch / f"block-{self._count}.out"
        return out.read_text(errors="replace") if out.exists() else ""

    def _wait_for(self, n: int, deadline: float) -> int | None:
        stdout = self._proc.stdout
        if stdout is None:
            raise RuntimeError("no pipe from the walkthrough's shell")
        fd = stdout.fileno()
        while True:
            m = _DONE.search(self._buffer)
            if m and int(m.group(1)) == n:
                self._buffer = self._buffer[m.end() :]
                return int(m.group(2))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                self._buffer += chunk
            elif self._proc.poll() is not None:
                return None  # the shell exited (a background job may hold the pipe open)

    def close(self) -> None:
        """End the shell and everything it started (its process group)."""
        pgid = self._proc.pid
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The shell is gone; wait briefly for its background jobs to follow.
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.05)
            if not _group_alive(pgid):
                break
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
