"""Settings that are checked when the broker starts, before it creates any state."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.kbs.broker import build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not a certificate\n", "is not a PEM file of certificates"),
    ],
)
def test_a_bad_tpm_ek_ca_bundle_stops_the_start(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    bundle = tmp_path / "ek-ca.pem"
    if content is not None:
        bundle.write_bytes(content)
    data_dir = tmp_path / "data"
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=data_dir),
        attestation=AttestationConfig(tpm_ek_ca_bundle=bundle),
    ).validate()
    with pytest.raises(ConfigError, match=message) as refused:
        build_broker(config)
    assert "attestation.tpm_ek_ca_bundle" in str(refused.value)
    # Refused before any state was made: no keys, no store, no data directory.
    assert not data_dir.exists()
