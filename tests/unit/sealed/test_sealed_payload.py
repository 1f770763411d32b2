"""Payload JSON: upstream's payload files read and write back unchanged; bad fields refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from custodes.sealed.errors import SealedPayloadError
from custodes.sealed.payload import EnvelopePayload, VaultPayload, parse_payload

VAULT = {
    "version": "0.1.0",
    "type": "vault",
    "name": "kbs:///one/2/trois",
    "provider": "kbs",
    "provider_settings": {},
    "annotations": {},
}


def _load(vectors: Path, name: str) -> Any:
    return json.loads((vectors / "guest-components" / "sealed-secret" / name).read_text())


@pytest.mark.parametrize("name", ["gc-vault-1.json", "gc-vault-2.json"])
def test_upstream_vault_payloads(vectors: Path, name: str) -> None:
    obj = _load(vectors, name)
    payload = parse_payload(obj)
    assert isinstance(payload, VaultPayload)
    # Same members, same order as upstream's files.
    assert list(payload.to_json().items()) == list(obj.items())


def test_upstream_vault_2_fields(vectors: Path) -> None:
    payload = VaultPayload.from_json(_load(vectors, "gc-vault-2.json"))
    assert payload == VaultPayload(name="kbs:///one/2/trois")


def test_upstream_envelope_payload(vectors: Path) -> None:
    obj = _load(vectors, "gc-envelope-1.json")
    payload = parse_payload(obj)
    assert isinstance(payload, EnvelopePayload)
    assert (payload.key_id, payload.encrypted_key, payload.encrypted_data, payload.iv) == (
        "xxx",
        "yyy",
        "zzz",
        "www",
    )
    assert payload.provider == "aliyun" and payload.wrap_type == "A256GCM"
    assert list(payload.to_json().items()) == list(obj.items())


def test_missing_annotations_read_as_empty() -> None:
    obj = {k: v for k, v in VAULT.items() if k != "annotations"}
    payload = VaultPayload.from_json(obj)
    assert payload.annotations == {}
    assert "annotations" in payload.to_json()


def test_payload_values_are_copied() -> None:
    obj = json.loads(json.dumps(VAULT))
    obj["provider_settings"] = {"region": "r"}
    payload = VaultPayload.from_json(obj)
    obj["provider_settings"]["region"] = "changed"
    out = payload.to_json()
    out["provider_settings"]["region"] = "again"
    assert payload.provider_settings == {"region": "r"}


def test_unknown_version_parses() -> None:
    """Upstream checks the version at unseal time, not when reading."""
    assert VaultPayload.from_json({**VAULT, "version": "9.9.9"}).version == "9.9.9"


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "vault",
        {**VAULT, "type": "other"},
        {k: v for k, v in VAULT.items() if k != "type"},
    ],
    ids=["array", "string", "unknown-type", "no-type"],
)
def test_parse_payload_refuses(obj: Any) -> None:
    with pytest.raises(SealedPayloadError):
        parse_payload(obj)


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": 5},
        {"provider": None},
        {"version": 1},
        {"version": ""},
        {"provider_settings": []},
        {"annotations": "x"},
        {"extra": 1},
    ],
    ids=["empty-name", "int-name", "null-provider", "int-version", "empty-version", "settings",
         "annotations", "unknown-member"],
)  # fmt: skip
def test_vault_fields_refused(change: dict[str, Any]) -> None:
    with pytest.raises(SealedPayloadError):
        VaultPayload.from_json({**VAULT, **change})


def test_vault_missing_provider_settings_refused() -> None:
    with pytest.raises(SealedPayloadError):
        VaultPayload.from_json({k: v for k, v in VAULT.items() if k != "provider_settings"})


def test_vault_reader_refuses_envelope(vectors: Path) -> None:
    with pytest.raises(SealedPayloadError):
        VaultPayload.from_json(_load(vectors, "gc-envelope-1.json"))


@pytest.mark.parametrize(
    "change",
    [
        {"wrap_type": "A128GCM"},
        {"wrap_type": None},
        {"key_id": ""},
        {"iv": 12},
        {"encrypted_data": ""},
        {"name": "x"},
    ],
    ids=["wrap-type", "null-wrap", "empty-key-id", "int-iv", "empty-data", "vault-member"],
)
def test_envelope_fields_refused(vectors: Path, change: dict[str, Any]) -> None:
    with pytest.raises(SealedPayloadError):
        EnvelopePayload.from_json({**_load(vectors, "gc-envelope-1.json"), **change})


def test_envelope_ctr_wrap_type_parses(vectors: Path) -> None:
    # Upstream defines A256CTR; reading it is fine, opening it is refused (envelope tests).
    obj = {**_load(vectors, "gc-envelope-1.json"), "wrap_type": "A256CTR"}
    assert EnvelopePayload.from_json(obj).wrap_type == "A256CTR"
