"""VM start-up: power-on to the workload's first instruction, split into firmware, kernel
(+ initramfs), job set-up (AK enrolment through the EK), and `custodes run` (attestation,
secret release, exec); and, in the same run, the same guest on the host without a VM.

The VM is `custodes vm`'s approved boot (QEMU TCG unless --accel kvm, OVMF, swtpm, the Debian
kernel, the project's initramfs). Times are host wall-clock seconds from QEMU's start to the
moment each `CUSTODES-VM-T` mark appears on the serial console (polled every 20 ms); the
firmware phase ends at power-on + (host time of the first mark - guest uptime at that mark).

The host baseline runs the same `custodes run` command with the same sealed secret, broker
and policy, against a swtpm whose PCRs were extended with the recorded boot's digests
(tests/vectors/vm) and that log attached, its AK listed in `trusted_aks`: attestation and
release without a VM.

Usage: .venv/bin/python bench/vmstart.py [--boots 3] [--host-runs 3] [--accel tcg]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from custodes._internal.b64 import b64std_encode
from custodes.attestation.eventlog import ALG_SHA256, CcEventLog
from custodes.guest.attester.tpm import TpmAttester
from custodes.vm.scenario import Lab, lab
from custodes.vm.tpm import VirtualTpm

LOG = Path(__file__).parents[1] / "tests" / "vectors" / "vm" / "ovmf-direct-boot.eventlog"


def vm_phases(env: Lab) -> dict[str, float]:
    outcome = env.boot("bench", env.approved_spec())
    marks = outcome.result.marks
    if outcome.secret_digest is None or not {"kernel_start", "userspace", "run", "workload"} <= set(
        marks
    ):
        raise SystemExit(
            "vmstart: the approved VM did not reach its workload:\n"
            + outcome.result.console[-2000:]
        )
    return {
        "firmware": marks["kernel_start"],
        "kernel + initramfs": marks["userspace"] - marks["kernel_start"],
        "job set-up (AK enrolment)": marks["run"] - marks["userspace"],
        "custodes run (attest, release, exec)": marks["workload"] - marks["run"],
        "total": marks["workload"],
    }


def host_run(env: Lab, tcti: str) -> float:
    workload = 'echo "workload"; printf %s "$SECRET" | sha256sum'
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "custodes", "run", "--url", env.url, "--tee", "tpm",
         "--tcti", tcti, "--", "/bin/sh", "-c", workload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SECRET": env.sealed, "CUSTODES_TPM_EVENTLOG": str(LOG)},
    )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()
    elapsed = time.monotonic() - started
    _, err = process.communicate(timeout=60)
    if first.strip() != b"workload":
        raise SystemExit(f"vmstart: the host guest was refused: {err.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--host-runs", type=int, default=3)
    parser.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    args = parser.parse_args()
    with lab(accel=args.accel, timeout=300) as env:
        runs = [vm_phases(env) for _ in range(args.boots)]
        host_tpm = VirtualTpm.manufacture(env.workdir / "host-tpm")
        with host_tpm.serve_tcp() as tcti:
            attester = TpmAttester(tcti)
            for entry in CcEventLog.from_bytes(LOG.read_bytes()).entries:
                if entry.type_name != "EV_NO_ACTION":
                    (digest,) = [d.digest for d in entry.digests if d.algorithm == ALG_SHA256]
                    attester.extend_pcr_digest(entry.index, digest)
            env.admin.register_reference_values(
                {"trusted_aks": [b64std_encode(attester.ak_public_der())]}
            )
            host = [host_run(env, tcti) for _ in range(args.host_runs)]
    print(f"VM start-up, {args.boots} boot(s), QEMU accel={args.accel}; median (min-max) seconds")
    for phase in runs[0]:
        values = [run[phase] for run in runs]
        print(
            f"  {phase:<40} {statistics.median(values):7.2f}  ({min(values):.2f}-{max(values):.2f})"
        )
    print(f"Host, no VM, {args.host_runs} run(s): custodes run to the workload's first line")
    median, low, high = statistics.median(host), min(host), max(host)
    label = "custodes run (attest, release, exec)"
    print(f"  {label:<40} {median:7.2f}  ({low:.2f}-{high:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
