"""Pod start: time from `custodes run` starting to the workload's exec, with 0, 1, 10 and 100
sealed environment variables, and attestations per start.

The broker is `custodes serve` on loopback with the sample TEE (the time is then the guest's
own cost: one handshake plus one resource request and one unseal per secret). The floor is
`custodes run` with no sealed secret, measured in the same run: interpreter start, imports
and exec, no attestation. Each figure is the median of --repeat starts.

Usage: .venv/bin/python bench/podstart.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from served import SAMPLE_REFERENCE_VALUES, start_sample_broker

from custodes.admin_client import AdminClient, load_admin_key
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal

KID = "kbs:///default/sealing/bench"
COUNTS = (0, 1, 10, 100)


def attestations(url: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("custodes_attestations_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def one_start(url: str, env: dict[str, str]) -> float:
    """Seconds from spawning `custodes run` to the workload's first instruction."""
    t0 = time.time_ns()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custodes",
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
    return (int(result.stdout.decode().strip()) - t0) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, url, data = start_sample_broker(Path(tmpdir))
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
            rows = []
            for count in COUNTS:
                env = dict(list(sealed.items())[:count])
                before = attestations(url)
                times = [one_start(url, env) for _ in range(args.repeat)]
                per_start = (attestations(url) - before) / args.repeat
                rows.append((count, statistics.median(times), per_start))
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    floor = rows[0][1]
    print(f"\ncustodes run -> exec, median of {args.repeat} starts (sample TEE, loopback broker)")
    print(f"{'sealed':>7} {'ms':>9} {'ratio to floor':>15} {'attestations/start':>19}")
    for count, median, per_start in rows:
        print(f"{count:>7} {median * 1000:9.1f} {median / floor:15.2f} {per_start:19.1f}")
    if len(rows) > 2:
        marginal = (rows[-1][1] - rows[1][1]) / (COUNTS[-1] - COUNTS[1]) * 1000
        print(f"\nmarginal cost per sealed secret: {marginal:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
