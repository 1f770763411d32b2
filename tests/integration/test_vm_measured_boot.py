"""End to end in a real VM: QEMU + OVMF + a swtpm vTPM with an EK certificate + the Debian
kernel + the project's initramfs; the guest enrols its AK through the EK, `custodes run`
attests with the quote and the firmware event log, and the broker releases the sealed secret
only to the approved boot. Another command line, another initrd and another firmware build
are refused, and the admin's denial explanation names the failed measurement.

Needs qemu-system-x86_64 (scripts/setup-system); the kernel is fetched into the cache on
first use (scripts/setup-vm). Bounded: four boots of ~20 s each under TCG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.vm.kernel import fetch_kernel, find_kernel
from custodes.vm.machine import boot
from custodes.vm.scenario import (
    DEMO_SECRET,
    EVIDENCE_LINE,
    Lab,
    Outcome,
    explain,
    lab,
    other_firmware,
    replay,
    tampered_initrd,
)

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None,
    reason="QEMU cannot run here: qemu-system-x86_64 is not installed (scripts/setup-system)",
)
TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def env() -> Iterator[Lab]:
    try:
        find_kernel()
    except ConfigError:
        fetch_kernel()
    with lab(timeout=TIMEOUT_S) as running:
        yield running


@pytest.fixture(scope="module")
def approved(env: Lab) -> Outcome:
    """The approved boot, which also prints one quote as an eavesdropper would capture it."""
    return env.boot("approved", env.approved_spec(), show_evidence=True)


def test_the_approved_vm_receives_the_secret(approved: Outcome) -> None:
    outcome = approved
    assert outcome.result.status == 0, outcome.result.console[-3000:]
    assert outcome.secret_digest == hashlib.sha256(DEMO_SECRET).hexdigest()
    # the console shows the boot's phases: kernel, userspace, job, workload
    assert {"kernel", "userspace", "job", "workload"} <= set(outcome.result.marks)


def _refused_naming(env: Lab, name: str, spec_change: dict[str, object], reference: str) -> None:
    spec = dataclasses.replace(env.approved_spec(), **spec_change)  # type: ignore[arg-type]
    outcome = env.boot(name, spec)
    assert outcome.secret_digest is None
    assert outcome.result.status not in (0, None), outcome.result.console[-3000:]
    assert outcome.correlation_id is not None, outcome.result.console[-3000:]
    explanation = "\n".join(explain(env.admin, outcome.correlation_id))
    assert f'"{reference}"' in explanation, explanation


def test_another_kernel_command_line_is_refused(env: Lab) -> None:
    cmdline = env.approved_spec().cmdline + " init=/bin/sh"
    _refused_naming(env, "cmdline", {"cmdline": cmdline}, "measured_boot_cmdline")


def test_another_firmware_is_refused(env: Lab) -> None:
    other = other_firmware(env.approved_spec())
    change: dict[str, object] = {
        "firmware": other.firmware,
        "firmware_vars": other.firmware_vars,
    }
    _refused_naming(env, "firmware", change, "measured_boot_firmware")


def test_another_initrd_is_refused(env: Lab) -> None:
    _refused_naming(env, "initrd", {"initrd": tampered_initrd(env.kernel)}, "measured_boot_initrd")


def test_a_quote_captured_from_the_approved_boot_is_refused_in_a_new_session(
    env: Lab, approved: Outcome
) -> None:
    found = EVIDENCE_LINE.search(approved.result.console)
    assert found is not None, approved.result.console[-3000:]
    captured = json.loads(found.group(1))
    assert "uefi_eventlog" in captured  # the genuine quote, with its genuine log
    refusal = replay(env.url, captured)
    assert refusal is not None and refusal.startswith("401"), refusal
    assert "binding digest" in refusal


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # exited meanwhile
    return found


def test_a_timeout_leaves_no_process_and_no_file(
    env: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # boot()'s work directory goes here
    result = boot(
        env.approved_spec(),
        env.tpm,
        job_script="sleep 600\n",
        broker_port=env.port,
        timeout=4.0,  # QEMU is still in the firmware: killed mid-boot
    )
    assert result.timed_out and result.status is None
    assert list(scratch.iterdir()) == []  # the VARS copy, initrd, sockets, console: all gone
    assert _processes_mentioning(str(scratch)) == []  # qemu, its relays, swtpm: all stopped
