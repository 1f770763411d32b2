"""The webhook configuration file: namespaces, tenants, brokers, sealed-only Secrets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from custodes.initdata.encoding import decode_annotation
from custodes.k8s.errors import WebhookConfigError
from custodes.k8s.guestconfig import brokers_in
from custodes.k8s.webhook_config import load_webhook_config, parse_webhook_config
from k8s_helpers import make_pki

REPO = Path(__file__).resolve().parents[3]


def _config(text: str, base: Path = Path()) -> object:
    return parse_webhook_config(tomllib.loads(text), base)


def test_sample_and_deployed_configs_load() -> None:
    sample = load_webhook_config(REPO / "deploy" / "webhook" / "webhook.sample.toml")
    assert sample.mode == "selector" and sample.mutate
    assert sample.rules_for("payments") is not None
    docs = list(
        yaml.safe_load_all((REPO / "deploy" / "webhook" / "webhook-server.yaml").read_text())
    )
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    deployed = parse_webhook_config(tomllib.loads(config_map["data"]["webhook.toml"]), REPO)
    assert deployed.tenant_of("payments") is not None


def test_modes_and_rules(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "policy.rego").write_text("package agent_policy\n")
    config = load_webhook_config(
        _write(
            tmp_path,
            """
[webhook]
confidential_namespaces = "config"
mutate = true
runtime_classes = ["kata-qemu-snp", "kata-qemu-tdx"]

[namespaces.payments]
tenant = "bank"
labels = { "custodes.io/confidential" = "true" }
sealed_secrets = ["db"]
runtime_class = "kata-qemu-tdx"

[namespaces.web]
labels = { "custodes.io/confidential" = "false" }

[tenants.bank]
brokers = ["https://B.example:8443/", "https://backup.example"]
broker_cert = "ca.pem"
policy = "policy.rego"
""",
        )
    )
    assert config.is_confidential("payments")
    assert not config.is_confidential("web") and not config.is_confidential("other")
    rules = config.rules_for("payments")
    assert rules is not None
    assert rules.brokers == {"https://b.example:8443", "https://backup.example:443"}
    assert rules.sealed_secrets == {"db"} and rules.tenant == "bank"
    assert config.runtime_class_for("payments") == "kata-qemu-tdx"
    assert config.runtime_class_for("web") == "kata-qemu-snp"
    assert config.rules_for("web") is None
    tenant = config.tenant_of("payments")
    assert tenant is not None
    injected = decode_annotation(tenant.annotation)
    assert [r.url for r in brokers_in(injected).refs] == ["https://B.example:8443/"] * 2
    assert pki.ca_pem.read_text() in injected.data["aa.toml"]
    assert injected.data["policy.rego"] == "package agent_policy\n"


def _write(directory: Path, text: str) -> Path:
    path = directory / "webhook.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[webhook]\nconfidential_namespaces = 'all'\n", "one of selector, config"),
        ("[webhook]\nmutate = 'yes'\n", "true or false"),
        ("[webhook]\nbogus = 1\n", "unknown setting"),
        ("[extra]\n", "unknown setting"),
        ("[webhook]\nruntime_classes = []\n", "must not be empty"),
        ("[webhook]\ndefault_runtime_class = 'runc'\n", "not in webhook.runtime_classes"),
        ("[webhook]\nmax_body_bytes = 0\n", "positive"),
        ("[namespaces.Bad_Name]\n", "not a namespace name"),
        ("[namespaces.a]\ntenant = 'nobody'\n", r"no \[tenants.nobody\]"),
        ("[namespaces.a]\nsealed_secrets = ['UPPER']\n", "not a Secret name"),
        ("[namespaces.a]\nlabels = { x = 1 }\n", "map label names to strings"),
        ("[namespaces.a]\nruntime_class = 'runc'\n", "not in webhook.runtime_classes"),
        ("[tenants.t]\nbrokers = []\n", "at least one"),
        ("[tenants.t]\nbrokers = ['ftp://x']\n", "must be an http:// or https:// URL"),
        ("[tenants.t]\nbrokers = ['https://x']\nbroker_cert = 'absent.pem'\n", "cannot read"),
        ("namespaces = 3\n", "must be a table"),
    ],
)
def test_refusals(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(
        WebhookConfigError if "cannot read" not in needle else Exception, match=needle
    ):
        load_webhook_config(_write(tmp_path, text))


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="cannot read"):
        load_webhook_config(tmp_path / "absent.toml")
    with pytest.raises(WebhookConfigError, match="not valid TOML"):
        load_webhook_config(_write(tmp_path, "[webhook\n"))
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(WebhookConfigError, match="cannot build the init-data"):
        load_webhook_config(
            _write(tmp_path, "[tenants.t]\nbrokers = ['https://x']\nbroker_cert = 'bad.pem'\n")
        )
