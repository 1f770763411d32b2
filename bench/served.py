"""`custodes serve` for the benchmarks: SQLite, sample TEE allowed, on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

# What the default policy needs for a sample TEE to be "affirming".
SAMPLE_REFERENCE_VALUES = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}


def start_sample_broker(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """(process, base URL, data dir); the caller terminates the process."""
    data = tmp / "data"
    config = tmp / "serve.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ndata_dir = "{data}"\n'
        "[attestation]\nunsafe_allow_sample_tee = true\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "serve", "--config", str(config)], stderr=subprocess.PIPE
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
