"""Attester selection and TEE detection (custodes.guest.attester.select).

There is no TDX, SEV-SNP or TPM device here, so detection looks at a ``Platform`` whose paths
point into a temp directory: device nodes and the sev-guest sysfs directory are plain
directories there, and configfs-tsm is ``fake_tsm.FakeTsm`` (real file operations plus the
kernel's side effects; its ``outblob`` is a recorded real report or quote from the vectors, so
the selected attesters can be run end to end).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.attester.select import (
    SELECTABLE,
    TCTI_ENV,
    Platform,
    default_tcti,
    detect,
    select_attester,
    tsm_provider,
)
from custodes.guest.attester.snp import SnpAttester
from custodes.guest.attester.tdx import TdxAttester
from custodes.guest.attester.tpm import TpmAttester
from custodes.types.tee import Tee
from fake_tsm import FakeTsm, make_dir

SNP_REPORT = Path("trustee/deps/verifier/test_data/snp/test-vlek-report.bin")
TDX_QUOTE = Path("dcap-qvl/tdx_quote")
DIGEST = bytes(48)


@pytest.fixture(autouse=True)
def _no_tcti_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TCTI_ENV, raising=False)


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    return Platform(
        tsm_root=tmp_path / "config" / "tsm",
        tdx_guest_device=tmp_path / "dev" / "tdx_guest",
        sev_guest_platform=tmp_path / "sys" / "devices" / "platform" / "sev-guest",
        tpm_devices=(tmp_path / "dev" / "tpmrm0", tmp_path / "dev" / "tpm0"),
        ccel=tmp_path / "sys" / "firmware" / "acpi" / "tables" / "data" / "CCEL",
    )


def _tsm(platform: Platform, provider: str | None, outblob: bytes = b"") -> FakeTsm:
    return FakeTsm(platform.tsm_root, provider=provider, outblob=outblob)


# --- detection order ------------------------------------------------------------------------


def test_nothing_detected(platform: Platform) -> None:
    assert detect(platform, environ={}) is None


def test_tdx_from_the_tsm_provider(platform: Platform) -> None:
    fake = _tsm(platform, "tdx_guest")
    assert detect(platform, configfs=fake, environ={}) == "tdx"
    assert fake.items() == []  # the probe removed its item


def test_tdx_from_the_guest_device(platform: Platform) -> None:
    make_dir(platform.tdx_guest_device)
    assert detect(platform, environ={}) == "tdx"


def test_snp_from_the_tsm_provider(platform: Platform) -> None:
    fake = _tsm(platform, "sev_guest")
    assert detect(platform, configfs=fake, environ={}) == "snp"
    assert fake.items() == []


def test_snp_from_the_sev_guest_platform_device(platform: Platform) -> None:
    make_dir(platform.sev_guest_platform)
    assert detect(platform, environ={}) == "snp"


@pytest.mark.parametrize("device", [0, 1], ids=["tpmrm0", "tpm0"])
def test_tpm_from_a_device(platform: Platform, device: int) -> None:
    make_dir(platform.tpm_devices[device])
    assert detect(platform, environ={}) == "tpm"


def test_tpm_from_the_tcti_variable(platform: Platform) -> None:
    assert detect(platform, environ={TCTI_ENV: "swtpm:port=2321"}) == "tpm"
    assert detect(platform, environ={TCTI_ENV: ""}) is None


def test_tdx_wins_over_snp_and_tpm(platform: Platform) -> None:
    make_dir(platform.tdx_guest_device)
    make_dir(platform.sev_guest_platform)
    make_dir(platform.tpm_devices[0])
    assert detect(platform, environ={}) == "tdx"


def test_tdx_provider_wins_over_the_sev_guest_device(platform: Platform) -> None:
    make_dir(platform.sev_guest_platform)
    assert detect(platform, configfs=_tsm(platform, "tdx_guest"), environ={}) == "tdx"


def test_snp_wins_over_tpm(platform: Platform) -> None:
    make_dir(platform.tpm_devices[0])
    assert detect(platform, configfs=_tsm(platform, "sev_guest"), environ={}) == "snp"


def test_other_providers_are_not_detected(platform: Platform) -> None:
    fake = _tsm(platform, "arm_cca_guest")
    assert detect(platform, configfs=fake, environ={}) is None
    make_dir(platform.tpm_devices[1])
    assert detect(platform, configfs=fake, environ={}) == "tpm"


def test_tsm_without_a_registered_provider_falls_through(platform: Platform) -> None:
    fake = _tsm(platform, None)  # mkdir fails with ENXIO, as in the kernel
    assert tsm_provider(platform, configfs=fake) is None
    assert detect(platform, configfs=fake, environ={}) is None
    make_dir(platform.sev_guest_platform)
    assert detect(platform, configfs=fake, environ={}) == "snp"


def test_no_configfs_tsm_has_no_provider(platform: Platform) -> None:
    assert tsm_provider(platform) is None


# --- the sample attester is never detected --------------------------------------------------


def test_nothing_detected_is_an_error_not_sample(platform: Platform) -> None:
    with pytest.raises(ConfigError):
        select_attester(None, platform=platform)


def test_sample_only_by_name(platform: Platform, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        attester = select_attester("sample", platform=platform)
    assert isinstance(attester, SampleAttester)
    assert "INSECURE" in caplog.text


def test_selectable_names() -> None:
    assert set(SELECTABLE) == {"tdx", "snp", "tpm", "sample"}
    assert all(Tee(name) for name in SELECTABLE)


# --- selection ------------------------------------------------------------------------------


def test_detected_tdx_attester_runs(platform: Platform, vectors: Path) -> None:
    quote = (vectors / TDX_QUOTE).read_bytes()
    fake = _tsm(platform, "tdx_guest", quote)
    attester = select_attester(None, platform=platform, configfs=fake)
    assert isinstance(attester, TdxAttester)
    evidence = attester.evidence(DIGEST)
    assert evidence["cc_eventlog"] is None  # the platform's CCEL path does not exist
    assert fake.inblobs == [bytes(64)]


def test_detected_snp_attester_runs(platform: Platform, vectors: Path) -> None:
    fake = _tsm(platform, "sev_guest", (vectors / SNP_REPORT).read_bytes())
    attester = select_attester(None, platform=platform, configfs=fake)
    assert isinstance(attester, SnpAttester)
    assert attester.evidence(DIGEST)["attestation_report"]["version"] == 3
    assert fake.inblobs == [bytes(64)]


@pytest.mark.parametrize(("name", "kind"), [("tdx", TdxAttester), ("snp", SnpAttester)])
def test_by_name_without_detection(platform: Platform, name: str, kind: type) -> None:
    assert isinstance(select_attester(name, platform=platform), kind)


def test_detected_tpm(platform: Platform) -> None:
    make_dir(platform.tpm_devices[1])
    assert isinstance(select_attester(None, platform=platform), TpmAttester)


def test_tpm_by_name_with_a_tcti() -> None:
    assert isinstance(select_attester("tpm", tcti="swtpm:port=2321"), TpmAttester)


def test_default_tcti(platform: Platform) -> None:
    assert default_tcti(platform, {}) == f"device:{platform.tpm_devices[0]}"  # none exists
    assert default_tcti(Platform(), {TCTI_ENV: ""}).startswith("device:/dev/tpm")
    make_dir(platform.tpm_devices[1])
    assert default_tcti(platform, {}) == f"device:{platform.tpm_devices[1]}"
    make_dir(platform.tpm_devices[0])
    assert default_tcti(platform, {}) == f"device:{platform.tpm_devices[0]}"
    assert default_tcti(platform, {TCTI_ENV: "swtpm:port=1"}) == "swtpm:port=1"


def test_tcti_variable_selects_tpm(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TCTI_ENV, "swtpm:port=2321")
    assert isinstance(select_attester(None, platform=platform), TpmAttester)


def test_unknown_name_is_a_config_error(platform: Platform) -> None:
    with pytest.raises(ConfigError):
        select_attester("sgx", platform=platform)
