"""Fuzz the measured-boot checks of a TPM firmware event log: parse, replay against the
recorded PCRs, event-data check and claims, on mutations of the recorded VM boot's log."""

from __future__ import annotations

import json

from fuzz_support import FUZZ, KEEP_FAILURES_READABLE, byte_inputs, check, vector
from hypothesis import given

from custodes.attestation.eventlog.measured_boot import MeasuredBoot
from custodes.rvps.measured_boot import RecordedFirmware, recorded_firmware

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

LOG = vector("vm/ovmf-direct-boot.eventlog")
_PCRS = json.loads(vector("vm/ovmf-direct-boot.pcrs.json"))
PCRS = tuple(bytes.fromhex(_PCRS[str(i)]) for i in range(24))


def _verify(data: bytes) -> MeasuredBoot:
    boot = MeasuredBoot.verify(data, PCRS, range(24))
    boot.claims()
    return boot


def test_seed_verifies() -> None:
    assert _verify(LOG).replayed


@FUZZ
@given(data=byte_inputs([LOG]))
def test_fuzz_measured_boot(data: bytes) -> None:
    check("tpm.measured_boot", _verify, data, MeasuredBoot)


@FUZZ
@given(data=byte_inputs([LOG]))
def test_fuzz_recorded_firmware_log(data: bytes) -> None:
    check(
        "rv.measured_boot.firmware_log",
        lambda d: recorded_firmware(b"fw", d),
        data,
        RecordedFirmware,
    )
