"""AzureVerifierConfig (config.py): the TDX part is the tdx verifier's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzureVerifierConfig
from custodes.errors import ConfigError


def test_az_config_tdx_disabled_by_default() -> None:
    assert not AzureVerifierConfig().tdx_enabled


def test_az_config_tdx_config_shares_the_clock(tmp_path: Path) -> None:
    clock = FrozenClock(1.0)
    config = AzureVerifierConfig(clock=clock, tdx_collateral_path=tmp_path / "c.json")
    assert config.tdx_enabled
    tdx = config.tdx_config()
    assert tdx.clock is clock and tdx.collateral_path == tmp_path / "c.json"
    assert tdx.tcb_update == "early"


def test_az_config_pccs_without_fetcher_is_a_config_error() -> None:
    config = AzureVerifierConfig(tdx_pccs_url="https://pccs.example/")
    assert config.tdx_enabled
    with pytest.raises(ConfigError):
        config.tdx_config().collateral_source()
