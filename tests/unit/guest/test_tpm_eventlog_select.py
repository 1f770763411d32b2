"""Which firmware event log the TPM attester sends: the machine's for its own TPM device,
none for a TPM over a socket, the configured one when $CUSTODES_TPM_EVENTLOG is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.guest.attester.select import EVENTLOG_ENV, Platform, tpm_eventlog


def test_device_tpm_sends_the_securityfs_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(EVENTLOG_ENV, raising=False)
    log = tmp_path / "binary_bios_measurements"
    log.write_bytes(b"log")
    platform = Platform(tpm_eventlog=log)
    assert tpm_eventlog("device:/dev/tpmrm0", platform) == log


def test_no_log_when_the_machine_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENTLOG_ENV, raising=False)
    platform = Platform(tpm_eventlog=tmp_path / "absent")
    assert tpm_eventlog("device:/dev/tpmrm0", platform) is None


def test_a_socket_tpm_gets_no_machine_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENTLOG_ENV, raising=False)
    log = tmp_path / "binary_bios_measurements"
    log.write_bytes(b"log")
    assert tpm_eventlog("swtpm:host=127.0.0.1,port=2321", Platform(tpm_eventlog=log)) is None


def test_the_environment_names_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENTLOG_ENV, str(tmp_path / "recorded.log"))
    got = tpm_eventlog("swtpm:host=127.0.0.1,port=2321", Platform())
    assert got == tmp_path / "recorded.log"
