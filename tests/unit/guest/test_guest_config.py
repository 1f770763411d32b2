"""Guest configuration: brokers by host, credentials, the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.guest.config import (
    GuestConfig,
    broker_from_url,
    load_guest_config,
    parse_config,
)

TWO_BROKERS = """
[[brokers]]
name = "default"
url = "https://bank.example:8080/"
cacert = "bank-ca.pem"

[[brokers]]
name = "insurer"
url = "https://10.0.0.7:9443"
hosts = ["insurer.example", "10.0.0.7:9443"]

[attester]
tee = "tpm"
tcti = "swtpm:host=127.0.0.1,port=2321"
key_type = "rsa"

[[credentials]]
resource_uri = "kbs:///default/creds/aliyun"
path = "/run/confidential-containers/cdh/kbs/aliyun.json"

[run]
secret_mounts = ["/etc/secrets", "rel"]
unseal_failure = "warn"

[sealed]
kid_dir = "keys"

[rest]
features = "all"
"""


def test_full_config(tmp_path: Path) -> None:
    f = tmp_path / "guest.toml"
    f.write_text(TWO_BROKERS)
    config = load_guest_config(f)
    assert [b.name for b in config.brokers] == ["default", "insurer"]
    assert config.brokers[0].url == "https://bank.example:8080"
    assert config.brokers[0].hosts == ("bank.example:8080",)
    assert config.brokers[0].cacert == tmp_path / "bank-ca.pem"
    assert config.tee == "tpm" and config.key_type == "rsa"
    assert config.secret_mounts == (Path("/etc/secrets"), tmp_path / "rel")
    assert config.unseal_failure == "warn" and config.rest_features == "all"
    assert config.kid_dir == tmp_path / "keys"
    assert config.credentials[0].resource_uri == "kbs:///default/creds/aliyun"


def test_host_selects_the_broker(tmp_path: Path) -> None:
    config = parse_config(__import__("tomllib").loads(TWO_BROKERS), tmp_path)
    assert config.broker_for_host(None).name == "default"
    assert config.broker_for_host("").name == "default"
    assert config.broker_for_host("bank.example:8080").name == "default"
    assert config.broker_for_host("insurer.example").name == "insurer"
    assert config.broker_for_host("10.0.0.7:9443").name == "insurer"
    with pytest.raises(ConfigError, match=r"no broker is configured for host 'evil\.example'"):
        config.broker_for_host("evil.example")
    # The host of one broker's URL does not select it when hosts are given explicitly.
    with pytest.raises(ConfigError):
        config.broker_for_host("bank.example")


def test_single_broker_is_the_default() -> None:
    config = GuestConfig(brokers=(broker_from_url("http://127.0.0.1:1234"),))
    assert config.broker_for_host(None).url == "http://127.0.0.1:1234"
    assert config.broker_for_host("127.0.0.1:1234").url == "http://127.0.0.1:1234"


def test_no_broker() -> None:
    with pytest.raises(ConfigError, match="no broker configured"):
        GuestConfig().broker_for_host(None)


def test_ambiguous_default(tmp_path: Path) -> None:
    raw = {
        "brokers": [
            {"name": "a", "url": "http://a.example"},
            {"name": "b", "url": "http://b.example"},
        ]
    }
    with pytest.raises(ConfigError, match="ambiguous"):
        parse_config(raw, tmp_path).broker_for_host(None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"nope": 1}, "unknown setting"),
        ({"brokers": {"url": "http://x"}}, "array of tables"),
        ({"brokers": [{"name": "x"}]}, "url is required"),
        ({"brokers": [{"url": "ftp://x"}]}, "http"),
        ({"brokers": [{"url": "http://x", "hosts": "x"}]}, "hosts"),
        ({"brokers": [{"url": "http://x", "extra": 1}]}, "unknown setting"),
        (
            {"brokers": [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]},
            "unique",
        ),
        (
            {"brokers": [{"name": "a", "url": "http://x"}, {"name": "b", "url": "http://x"}]},
            "only one broker",
        ),
        ({"attester": {"key_type": "dsa"}}, "key_type"),
        ({"credentials": [{"resource_uri": "kbs:///a/b/c"}]}, "resource_uri and path"),
        ({"run": {"unseal_failure": "ignore"}}, "unseal_failure"),
        ({"run": {"secret_mounts": "/x"}}, "secret_mounts"),
        ({"sealed": {"unsafe_allow_unsigned": "yes"}}, "unsafe_allow_unsigned"),
        ({"rest": {"features": "everything"}}, "features"),
    ],
)
def test_refusals(tmp_path: Path, raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, tmp_path)


def test_unreadable_and_invalid(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_guest_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[brokers]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_guest_config(bad)
    # Nesting deep enough to exhaust tomllib's recursion is refused in one line, not a crash.
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_guest_config(deep)
    undecodable = tmp_path / "latin1.toml"
    undecodable.write_bytes(b'[rest]\nlisten = "\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_guest_config(undecodable)
