"""A real PostgreSQL server for tests: fresh cluster, free loopback port, always removed.

Use it from any test under ``tests/`` as::

    from pg_server import running_postgres

    with running_postgres() as pg:
        dsn = pg.create_database()  # a fresh, empty database
        store = PostgresStore(dsn)

(``tests/`` is importable for the reason given in ``tests/swtpm.py``.)

The cluster is made by ``initdb`` in a temporary directory and run by ``pg_ctl`` on
127.0.0.1 and a free port, with its Unix socket in the same directory (the system socket
directory is not writable by the server's user), trust authentication and one superuser,
``custodes``. PostgreSQL refuses to run as root, so under root every server command runs as
``nobody`` and the temporary directory is handed to that user; nothing on the system is
created or changed. On exit the server is stopped with ``pg_ctl stop -m immediate`` (killed if
that fails) and the directory removed, also when the test failed.

Fault helpers: :meth:`PgServer.restart` (an orderly stop and start), :meth:`PgServer.kill9`
(SIGKILL of the postmaster, as a crash; the data stays) and :meth:`PgServer.start`.

The binaries come from the Debian ``postgresql`` package (``scripts/setup-system``), found
with ``pg_config --bindir`` or under ``/usr/lib/postgresql/*/bin``; a missing binary is an
error, not a skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import psycopg

HOST = "127.0.0.1"
USER = "custodes"
_START_ATTEMPTS = 5
_TIMEOUT_S = 30
_UNPRIVILEGED = "nobody"


def _bin_dir() -> Path:
    """The directory with initdb, pg_ctl and postgres (the newest installed major version)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
        )
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise RuntimeError("PostgreSQL server binaries not found (see scripts/setup-system)")


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(_UNPRIVILEGED)
    return entry.pw_uid, entry.pw_gid


def _temp_parent() -> str | None:
    """A parent for the cluster directory that the server's user can traverse."""
    default = tempfile.gettempdir()
    if os.geteuid() != 0 or os.stat(default).st_mode & stat.S_IXOTH:
        return None
    # TMPDIR is private to root: the server user could not reach a directory in it.
    return "/tmp"


class PgServer:
    """A PostgreSQL cluster in a temporary directory, served on a loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.port = 0
        self._bin = _bin_dir()
        self._as = _run_as()
        # None: no change (we are not root); else the unprivileged user, with no extra groups.
        self._uid = None if self._as is None else self._as[0]
        self._gid = None if self._as is None else self._as[1]
        self._groups: list[int] | None = None if self._as is None else []
        self._names = itertools.count()
        self._process: subprocess.Popen[bytes] | None = None

    # --- commands run as the server's user ----------------------------------------------

    def _command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            cwd=self.root,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S + 10,
            check=False,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"{self._log_tail()}"
            )
        return result

    @staticmethod
    def _env() -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}

    def _log_tail(self) -> str:
        try:
            return "\nserver log:\n" + self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def init(self) -> None:
        if self._as is not None:
            os.chown(self.root, *self._as)
        self._command(
            "initdb",
            "--pgdata",
            str(self.data_dir),
            "--username",
            USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            # The cluster is thrown away after the test: skip initdb's own fsyncs. The server
            # itself runs with fsync on, as in production.
            "--no-sync",
        )

    def _options(self) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "shared_buffers": "16MB",
            "max_connections": "100",
            "fsync": "on",
            "synchronous_commit": "on",
        }
        return [f"--{k}={v}" for k, v in settings.items()]

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        The postmaster is this process's child (not daemonised by ``pg_ctl start``) so that
        it is reaped when it dies: a crashed postmaster left as a zombie would still "own"
        its lock file, and the next start would refuse to run. The first start picks a free
        port; later ones reuse it, as a restarted server would.
        """
        attempts = 1 if self.port else _START_ATTEMPTS
        failures = []
        for _ in range(attempts):
            if not self.port:
                self.port = _free_port()
            process = self._spawn()
            error = self._wait_ready(process)
            if error is None:
                self._process = process
                return
            failures.append(f"port {self.port}: {error}")
            if attempts > 1:
                self.port = 0  # most likely lost the port to another process: try another
        raise RuntimeError("PostgreSQL did not start: " + "; ".join(failures) + self._log_tail())

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            if self._as is not None:
                os.chown(self.log_path, *self._as)
            return subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data_dir), *self._options()],
                cwd=self.root,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Not in the test's process group: a Ctrl-C aimed at pytest must not stop
                # the server before the fixture's orderly teardown.
                start_new_session=True,
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str | None:
        """None once ``process`` reports itself ready (as ``pg_ctl start --wait`` checks)."""
        deadline = time.monotonic() + _TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"postgres exited with {process.returncode}"
            try:
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            except OSError:
                lines = []
            # Line 1: the postmaster's PID; line 8: its status ("ready" once it accepts).
            if len(lines) >= 8 and lines[0] == str(process.pid) and lines[7].strip() == "ready":
                return None
            time.sleep(0.02)
        process.kill()
        process.wait()
        return "not ready in time"

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` disconnects clients and shuts down cleanly; ``immediate``
        quits without a checkpoint (the next start runs crash recovery)."""
        process = self._require_running()
        self._command("pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode", mode, "--wait")
        process.wait(_TIMEOUT_S)
        self._process = None

    def restart(self, mode: str = "fast") -> None:
        """Stop (by default cleanly, disconnecting every client) and start again."""
        self.stop(mode)
        self.start()

    def kill9(self) -> None:
        """SIGKILL the postmaster, as in a crash, and wait until every server process is gone.

        The server's other processes notice their postmaster's death and exit by themselves
        (a new postmaster would refuse to start while they hold its shared memory). The
        server stays down until :meth:`start`, which runs crash recovery.
        """
        process = self._require_running()
        children = _children(process.pid)
        process.kill()
        process.wait(_TIMEOUT_S)
        self._process = None
        deadline = time.monotonic() + _TIMEOUT_S
        for child in children:
            while _alive(child):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL process {child} outlived its postmaster")
                time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("PostgreSQL is not running")
        return self._process

    def _kill_all(self) -> None:
        """Last resort at teardown: SIGKILL the postmaster and its other processes."""
        process, self._process = self._process, None
        if process is None:
            return
        for victim in [process.pid, *_children(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        process.wait(_TIMEOUT_S)

    # --- client side ----------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={HOST} port={self.port} user={USER} dbname={dbname} connect_timeout=10"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection in autocommit mode (the caller closes it)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True)

    def create_database(self, *, encoding: str = "UTF8") -> str:
        """A fresh, empty database; its DSN."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING '{encoding}'"
                " LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        return self.dsn(name)

    def drop_database(self, dsn: str, *, force: bool = False) -> None:
        """Drop a database; unless ``force``, fails while a client is still connected to it."""
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE {name}{' WITH (FORCE)' if force else ''}")


def _alive(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z) is dead; it is reaped by its parent, which may be gone already.
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


@contextmanager
def running_postgres() -> Iterator[PgServer]:
    """A fresh PostgreSQL cluster for the duration of the ``with`` block."""
    root = Path(tempfile.mkdtemp(prefix="custodes-pg-", dir=_temp_parent()))
    server = PgServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            if server.running:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    server.stop("immediate")
        finally:
            server._kill_all()
            shutil.rmtree(root, ignore_errors=True)
