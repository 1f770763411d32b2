"""`custodes serve` for the benchmarks: SQLite, sample TEE allowed, on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

# What the default policy needs for a sample TEE to be "affirming".
SAMPLE_REFERENCE_VALUES = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}


def start_sample_broker(
    tmp: Path, *, extra_config: str = "", args: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """(process, base URL, data dir); the caller terminates the process. ``extra_config`` is
    appended to the TOML (e.g. an ``[operator]`` table), ``args`` to the command line."""
    data = tmp / "data"
    config = tmp / "serve.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ndata_dir = "{data}"\n'
        "[attestation]\nunsafe_allow_sample_tee = true\n" + extra_config
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "serve", "--config", str(config), *args],
        stderr=subprocess.PIPE,
    )
    stderr = proc.stderr
    if stderr is None:  # pragma: no cover - stderr=PIPE always gives a stream
        raise SystemExit("no server log")
    try:
        line = stderr.readline().decode()
        while " at http" not in line:  # log lines (e.g. a generated key) may come first
            line = stderr.readline().decode()
            if not line:
                raise SystemExit("custodes serve did not start")
    except BaseException:
        proc.kill()
        raise
    url = line.split(" at ", 1)[1].split("/kbs/v0")[0]
    # Keep draining the server's log, or it blocks once the pipe is full.
    threading.Thread(target=stderr.read, daemon=True).start()
    return proc, url, data


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the kernel accounts to ``pid``, its live descendants (the
    workers of ``serve --workers``) and the children it has reaped: the server's own
    accounting, whoever drives it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])  # field 4: ppid
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    ticks = 0
    for member in tree:
        fields = _stat(member)
        if fields is None:
            continue
        # utime, stime (fields 14, 15), and cutime, cstime (16, 17) of reaped children.
        ticks += sum(int(f) for f in fields[11:15])
    return ticks / _TICKS
