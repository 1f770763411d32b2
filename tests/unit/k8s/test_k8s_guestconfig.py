"""The init-data naming the tenant's broker, and reading the brokers back out of it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.initdata.build import build
from custodes.initdata.errors import InitDataError
from custodes.k8s.guestconfig import (
    aa_toml,
    broker_initdata,
    brokers_in,
    cdh_toml,
    check_certificate,
    normalize_url,
    toml_string,
)
from k8s_helpers import make_pki


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://Broker.Example:8443/", "https://broker.example:8443"),
        ("https://broker.example", "https://broker.example:443"),
        ("HTTP://10.0.0.7", "http://10.0.0.7:80"),
        ("https://broker.example/tenants/bank/", "https://broker.example:443/tenants/bank"),
        ("https://[::1]:9443", "https://[::1]:9443"),
    ],
)
def test_normalize_url(url: str, normalized: str) -> None:
    assert normalize_url(url) == normalized


@pytest.mark.parametrize(
    "url",
    [
        "ftp://broker",
        "https://",
        "https://user:pw@broker",
        "https://broker?x=1",
        "https://broker#frag",
        "https://broker:99999",
        "broker:8443",
    ],
)
def test_normalize_url_refusals(url: str) -> None:
    with pytest.raises(ConfigError):
        normalize_url(url)


def test_toml_string_round_trips_awkward_text() -> None:
    text = 'a "quoted" \\ back\nslash\t\x01\x7f é'
    assert tomllib.loads(f"v = {toml_string(text)}")["v"] == text


def test_aa_and_cdh_toml_with_certificate(tmp_path: Path) -> None:
    pem = make_pki(tmp_path).ca_pem.read_text()
    aa = tomllib.loads(aa_toml("https://b:1", pem))
    assert aa == {"token_configs": {"kbs": {"url": "https://b:1", "cert": pem}}}
    cdh = tomllib.loads(cdh_toml("https://b:1", pem))
    assert cdh == {"kbc": {"name": "cc_kbc", "url": "https://b:1", "kbs_cert": pem}}
    assert "'''\n-----BEGIN CERTIFICATE-----" in aa_toml("https://b:1", pem)


def test_broker_initdata_is_deterministic_and_reads_back(tmp_path: Path) -> None:
    pem = make_pki(tmp_path).ca_pem.read_text()
    policy = "package agent_policy\ndefault ExecProcessRequest := false\n"
    one = broker_initdata("https://broker.example:8443", cert=pem, policy=policy)
    two = broker_initdata("https://broker.example:8443", cert=pem, policy=policy)
    assert one.raw == two.raw and one.digest == two.digest
    assert one.algorithm == "sha256"
    assert one.data["policy.rego"] == policy
    found = brokers_in(one)
    assert [(r.field, r.url) for r in found.refs] == [
        ("aa.toml: token_configs.kbs.url", "https://broker.example:8443"),
        ("cdh.toml: kbc.url", "https://broker.example:8443"),
    ]
    assert found.kbc_name == "cc_kbc"


def test_broker_initdata_refuses_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="http"):
        broker_initdata("file:///etc/passwd")
    with pytest.raises(ConfigError, match="not PEM"):
        broker_initdata("https://b", cert="not a certificate")


def test_check_certificate_refusals() -> None:
    with pytest.raises(ConfigError):
        check_certificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError):
        check_certificate("é")


def test_brokers_in_foreign_and_partial_documents() -> None:
    only_aa = build(aa='[token_configs.kbs]\nurl = "https://evil:1"\n', cdh="")
    assert [r.url for r in brokers_in(only_aa).refs] == ["https://evil:1"]
    assert brokers_in(only_aa).kbc_name is None
    nothing = build(aa="[log]\nlevel = 'info'\n", cdh="[kbc]\nname = 'offline_fs_kbc'\n")
    assert brokers_in(nothing).refs == ()
    assert brokers_in(nothing).kbc_name == "offline_fs_kbc"


def test_brokers_in_non_toml_entry() -> None:
    from custodes.initdata.format import InitData

    doc = InitData.parse('version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"aa.toml" = "x = ["\n')
    with pytest.raises(InitDataError):
        brokers_in(doc)
