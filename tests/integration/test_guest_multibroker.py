"""A pod with two workload admins: each kbs://HOST/... URI goes to its own broker (one
attestation each), an unknown host is refused, and [[credentials]] land under the root only."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.cdh import ConfidentialDataHub
from custodes.guest.config import BrokerConfig, Credential, GuestConfig
from custodes.protocol.resource import ResourcePath
from live_broker import live_broker


def test_two_brokers_by_host(tmp_path: Path) -> None:
    with live_broker(tmp_path / "bank") as bank, live_broker(tmp_path / "insurer") as insurer:
        path = ResourcePath("default", "key", "k")
        with bank.admin() as a:
            a.put_resource(path, b"bank secret")
        with insurer.admin() as a:
            a.put_resource(path, b"insurer secret")
        config = GuestConfig(
            brokers=(
                BrokerConfig("default", bank.url, ("bank.example",)),
                BrokerConfig("insurer", insurer.url, ("insurer.example:443",)),
            ),
            credentials=(Credential("kbs://insurer.example:443/default/key/k", Path("ins/k")),),
            credentials_root=tmp_path / "creds",
        )
        agent = AttestationAgent(config, SampleAttester())
        hub = ConfidentialDataHub(agent)
        try:
            assert hub.get_resource("kbs:///default/key/k").reveal() == b"bank secret"
            assert hub.get_resource("kbs://bank.example/default/key/k").reveal() == b"bank secret"
            got = hub.get_resource("kbs://insurer.example:443/default/key/k")
            assert got.reveal() == b"insurer secret"
            with pytest.raises(ConfigError, match="no broker is configured for host"):
                hub.get_resource("kbs://attacker.example/default/key/k")
            written = hub.fetch_credentials(config.credentials)
            assert written == [tmp_path / "creds" / "ins" / "k"]
            assert written[0].read_bytes() == b"insurer secret"
            assert written[0].stat().st_mode & 0o777 == 0o600
            # One attestation per broker, however many requests.
            assert agent.handshakes() == 2
            for bad in (Path("../escape"), Path("/etc/passwd"), Path("x/../../escape")):
                with pytest.raises(ConfigError):
                    hub.fetch_credentials((Credential("kbs:///default/key/k", bad),))
        finally:
            agent.close()
