"""Pod start: time from `custodes run` starting to the workload's exec, with 0, 1, 10 and 100
sealed environment variables, attestations per start, and the broker's and the guest's CPU
per start.

The broker is `custodes serve` on loopback with the sample TEE (the time is then the guest's
own cost, one handshake, plus per secret one resource request, one unseal and the broker's
release). Each count is measured two ways in the same run, interleaved start by start:
`custodes run` as it is (its secrets fetched concurrently) and with its fetches made one at a
time (``launcher.FETCH_CONCURRENCY = 1``, how every start worked before). The floor is
`custodes run` with no sealed secret: interpreter start, imports and exec, no attestation.
Each figure is the median of --repeat starts (the two modes take turns going first); the
cost per extra secret is the least-squares slope of the time over 1, 10 and 100 secrets.

Usage: .venv/bin/python bench/podstart.py [--repeat 5] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from served import SAMPLE_REFERENCE_VALUES, cpu_seconds, start_sample_broker

from custodes.admin_client import AdminClient, load_admin_key
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal

KID = "kbs:///default/sealing/bench"
COUNTS = (0, 1, 10, 100)


# `custodes run` with its fetches one at a time: the module constant is the default of
# launcher.prepare(concurrency=...), which the command does not set.
SEQUENTIAL = (
    "import sys\n"
    "from custodes.guest import launcher\n"
    "launcher.FETCH_CONCURRENCY = 1\n"
    "from custodes.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)
MODES = {"concurrent": ["-m", "custodes"], "sequential": ["-c", SEQUENTIAL]}


def one_start(url: str, env: dict[str, str], mode: str) -> tuple[float, int, float]:
    """Seconds from spawning `custodes run` to the workload's first instruction, the
    attestations it made (from its own report: /metrics is per worker process), and the CPU
    seconds the start used (the guest's own cost, from the kernel's accounting)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time_ns()
    result = subprocess.run(
        [
            sys.executable,
            *MODES[mode],
            "run",
            "--url",
            url,
            "--tee",
            "sample",
            "--",
            "/bin/sh",
            "-c",
            "date +%s%N",
        ],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    made = re.search(rb"with (\d+) attestation", result.stderr)
    if made is None:
        raise SystemExit(f"custodes run did not report its attestations: {result.stderr!r}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return (int(result.stdout.decode().strip()) - t0) / 1e9, int(made[1]), cpu


def one_prepare(url: str, env: dict[str, str], mode: str) -> tuple[float, int, float]:
    """``--in-process``: the same start without the interpreter and the exec, by calling
    :func:`custodes.guest.launcher.prepare` here (no process start-up noise)."""
    from custodes.guest import launcher
    from custodes.guest.config import GuestConfig, broker_from_url

    config = GuestConfig(brokers=(broker_from_url(url),), tee="sample")
    # A launcher from before concurrent fetching has no FETCH_CONCURRENCY: both modes are
    # then the same sequential start.
    saved = getattr(launcher, "FETCH_CONCURRENCY", 1)
    setattr(launcher, "FETCH_CONCURRENCY", 1 if mode == "sequential" else saved)  # noqa: B010
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        prepared = launcher.prepare(config, env)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        setattr(launcher, "FETCH_CONCURRENCY", saved)  # noqa: B010
    if len(prepared.unsealed_env) != len(env):
        raise SystemExit(f"unsealed {len(prepared.unsealed_env)} of {len(env)} secrets")
    return elapsed, prepared.handshakes, cpu


@dataclass
class Row:
    times: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    server_cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODES, 0.0))
    guest_cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODES, 0.0))
    attestations: float = 0.0

    def ms(self, mode: str) -> float:
        return statistics.median(self.times[mode]) * 1000


def slope(xs: tuple[int, ...], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, help="pass --workers N to custodes serve")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="call the launcher in this process instead of spawning `custodes run`",
    )
    args = parser.parse_args()
    start = one_prepare if args.in_process else one_start
    serve_args = ["--workers", str(args.workers)] if args.workers else []
    rows: dict[int, Row] = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, url, data = start_sample_broker(Path(tmpdir), args=serve_args)
        try:
            signing = generate_signing_key()
            with AdminClient(url, load_admin_key(data / "admin-key.pem")) as a:
                a.register_reference_values(SAMPLE_REFERENCE_VALUES)
                a.put_resource(
                    ResourcePath.parse("default/sealing/bench"),
                    json.dumps(public_jwk(signing.public_key(), KID)).encode(),
                )
                sealed = {}
                for i in range(max(COUNTS)):
                    a.put_resource(ResourcePath("default", "bench", f"s{i}"), f"v{i}".encode())
                    sealed[f"SECRET_{i}"] = seal(
                        VaultPayload(name=f"kbs:///default/bench/s{i}"), signing, KID
                    )
            for count in COUNTS:
                env = dict(list(sealed.items())[:count])
                row = rows[count] = Row()
                for n in range(args.repeat):
                    # Alternate which mode goes first: a start right after another is slower.
                    for mode in list(MODES)[:: 1 if n % 2 == 0 else -1]:
                        cpu0 = cpu_seconds(proc.pid)
                        elapsed, made, guest_cpu = start(url, env, mode)
                        row.server_cpu[mode] += cpu_seconds(proc.pid) - cpu0
                        row.guest_cpu[mode] += guest_cpu
                        row.times[mode].append(elapsed)
                        row.attestations += made / (args.repeat * len(MODES))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    floor = rows[0].ms("concurrent")
    print(
        f"\ncustodes run -> exec, median of {args.repeat} starts per mode (sample TEE, loopback "
        "broker); broker CPU is per start"
    )
    print(
        f"{'sealed':>7} {'concurrent ms':>14} {'sequential ms':>14} {'ratio to floor':>15} "
        f"{'broker CPU ms':>14} {'guest CPU ms':>13} {'attestations':>13}"
    )
    for count, row in rows.items():
        cpu = row.server_cpu["concurrent"] / args.repeat * 1000
        guest = row.guest_cpu["concurrent"] / args.repeat * 1000
        print(
            f"{count:>7} {row.ms('concurrent'):14.1f} {row.ms('sequential'):14.1f} "
            f"{row.ms('concurrent') / floor if not args.in_process else float('nan'):15.2f} "
            f"{cpu:14.1f} {guest:13.1f} "
            f"{row.attestations:13.1f}"
        )
    counts = COUNTS[1:]  # every start that attests: the slope is the cost of one more secret
    print("\ncost per extra sealed secret (least-squares slope over 1, 10 and 100 secrets):")
    for mode in MODES:
        per = slope(counts, [rows[c].ms(mode) for c in counts])
        cpu = slope(counts, [rows[c].server_cpu[mode] * 1000 / args.repeat for c in counts])
        guest = slope(counts, [rows[c].guest_cpu[mode] * 1000 / args.repeat for c in counts])
        print(
            f"  {mode:<11} {per:6.2f} ms wall, {cpu:5.2f} ms broker CPU, {guest:5.2f} ms guest CPU"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
