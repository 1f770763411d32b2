"""Validation against the Kubernetes JSON schemas (kubernetes-validate, Kubernetes 1.31)."""

from __future__ import annotations

import pytest

from custodes.errors import ConfigError
from custodes.k8s.errors import ManifestSchemaError
from custodes.k8s.schema import DEFAULT_K8S_VERSION, has_schema, validate_object
from k8s_helpers import make_pod


def test_a_valid_pod_validates() -> None:
    assert DEFAULT_K8S_VERSION == "1.31"
    validate_object(make_pod(runtimeClassName="kata-qemu-snp"))


def test_unknown_field_is_named() -> None:
    pod = make_pod()
    pod["spec"]["containers"][0]["secutiryContext"] = {}
    with pytest.raises(ManifestSchemaError, match=r"spec\.containers\[0\].*'secutiryContext'"):
        validate_object(pod)


def test_wrong_type_message_never_quotes_the_value() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"k": ["hunter2-plaintext"]},
    }
    with pytest.raises(ManifestSchemaError) as info:
        validate_object(secret)
    assert "data.k" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_kind_and_unknown_kind() -> None:
    with pytest.raises(ManifestSchemaError, match="must be strings"):
        validate_object({"apiVersion": "v1"})
    custom = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert not has_schema(custom)
    assert has_schema(make_pod())
    with pytest.raises(ManifestSchemaError, match=r"no Kubernetes 1\.31 schema"):
        validate_object(custom)


def test_unknown_kubernetes_version() -> None:
    with pytest.raises(ConfigError, match="not known"):
        validate_object(make_pod(), "9.99")
