"""Sealed Secret manifests: values go to a real broker, the manifest holds only pointers.

The round trip runs the real guest side (sample TEE) against a real broker on loopback: the
Secret the cluster admin would apply unseals, inside the "TEE", to the original values.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.errors import UpstreamError
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.cdh import ConfidentialDataHub
from custodes.guest.config import GuestConfig, broker_from_url
from custodes.k8s.errors import ManifestError, SecretSourceError
from custodes.k8s.schema import validate_object
from custodes.k8s.secret import (
    LAST_APPLIED,
    SecretSource,
    sealed_secret_manifest,
    source_from_manifest,
    sources_from_manifests,
    values_from_files,
    values_from_literals,
)
from custodes.k8s.yamlio import dump_documents, load_documents
from custodes.protocol.resource import ResourcePath
from custodes.sealed.format import SealedSecret
from custodes.sealed.keys import public_jwk
from custodes.types.json import JsonObject
from custodes.types.secret import Secret
from live_broker import LiveBroker

KID = "kbs:///default/signing-key/sealed"


def assert_no_plaintext(text: str, values: list[bytes]) -> None:
    """The scan the issue asks for: no value, raw or base64, anywhere in the output."""
    for value in values:
        assert value.decode("utf-8", "replace") not in text
        assert base64.b64encode(value).decode() not in text
        assert base64.urlsafe_b64encode(value).decode().rstrip("=") not in text


class Recorder:
    """A store function that keeps what it was given (for tests that need no broker)."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}

    def __call__(self, path: ResourcePath, data: bytes) -> None:
        self.stored[str(path)] = data


def test_round_trip_through_a_real_broker_and_guest(
    broker: LiveBroker, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    values = {"password": secrets.token_hex(16).encode(), "api-token": secrets.token_bytes(40)}
    source = SecretSource(
        name="db-credentials",
        namespace="payments",
        values={k: Secret(v) for k, v in values.items()},
    )
    with broker.admin() as admin:
        admin.put_resource(
            ResourcePath("default", "signing-key", "sealed"),
            json.dumps(public_jwk(signing_key.public_key(), KID)).encode(),
        )
        manifest = sealed_secret_manifest(
            source, repo="default", store=admin.put_resource, signing_key=signing_key, kid=KID
        )
    validate_object(manifest)
    text = dump_documents([manifest])
    assert_no_plaintext(text, list(values.values()))
    assert manifest["metadata"]["labels"]["custodes.io/sealed"] == "true"
    assert manifest["type"] == "Opaque"
    sealed = {k: base64.b64decode(v).decode() for k, v in manifest["data"].items()}
    assert SealedSecret.parse(sealed["password"]).kid == KID
    hub = ConfidentialDataHub(
        AttestationAgent(GuestConfig(brokers=(broker_from_url(broker.url),)), SampleAttester())
    )
    try:
        for key, value in values.items():
            assert hub.unseal(sealed[key]).reveal() == value
    finally:
        hub.agent.close()


def test_vault_points_at_repo_name_key(signing_key: ec.EllipticCurvePrivateKey) -> None:
    store = Recorder()
    source = SecretSource(name="api", values={"token": Secret(b"tok-123456")})
    manifest = sealed_secret_manifest(
        source, repo="team-a", store=store, signing_key=signing_key, kid="k"
    )
    assert store.stored == {"team-a/api/token": b"tok-123456"}
    payload = base64.urlsafe_b64decode(
        base64.b64decode(manifest["data"]["token"]).decode().split(".")[2] + "=="
    )
    assert json.loads(payload)["name"] == "kbs:///team-a/api/token"
    assert "namespace" not in manifest["metadata"]


def test_from_manifest_drops_last_applied_and_refuses_leaks(
    signing_key: ec.EllipticCurvePrivateKey,
) -> None:
    value = b"correct horse battery staple"
    doc: JsonObject = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "db",
            "namespace": "payments",
            "labels": {"app": "shop"},
            "annotations": {LAST_APPLIED: json.dumps({"data": {"p": value.decode()}}), "a": "b"},
            "uid": "1234",
            "resourceVersion": "9",
        },
        "type": "Opaque",
        "data": {"p": base64.b64encode(value).decode()},
        "stringData": {"q": "another secret value"},
    }
    source = source_from_manifest(doc)
    assert source.annotations == {"a": "b"} and source.labels == {"app": "shop"}
    manifest = sealed_secret_manifest(
        source, repo="r", store=Recorder(), signing_key=signing_key, kid="k"
    )
    assert set(manifest["data"]) == {"p", "q"}
    assert "uid" not in manifest["metadata"]
    assert_no_plaintext(dump_documents([manifest]), [value, b"another secret value"])
    # A value that also sits in an annotation: refused before anything is stored.
    doc["metadata"]["annotations"]["note"] = f"password is {value.decode()}"
    store = Recorder()
    with pytest.raises(SecretSourceError, match="would contain the value of 'p'"):
        sealed_secret_manifest(
            source_from_manifest(doc), repo="r", store=store, signing_key=signing_key, kid="k"
        )
    assert store.stored == {}


@pytest.mark.parametrize(
    ("doc", "error", "needle"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap"}, ManifestError, "expected a v1 Secret"),
        ({"apiVersion": "v1", "kind": "Secret", "metadata": {}}, ManifestError, "metadata.name"),
        (
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "%%"}},
            ManifestError,
            "base64",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "data": {"k": "eA=="},
                "stringData": {"k": "x"},
            },
            SecretSourceError,
            "both data and stringData",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": "e30="},
            },
            SecretSourceError,
            "cannot name a broker resource",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "eA=="},
            },
            SecretSourceError,
            "read outside the TEE",
        ),
        (
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "s"},
                "stringData": {"k": "sealed.x"},
            },
            SecretSourceError,
            "already a sealed secret",
        ),
        (
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
            SecretSourceError,
            "no values",
        ),
    ],
)
def test_manifest_refusals(doc: dict[str, object], error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        source_from_manifest(doc)


def test_sources_from_a_list_and_refusals() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a"},
        "stringData": {"k": "v"},
    }
    docs = load_documents(
        json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, secret]})
    )
    assert [s.name for s in sources_from_manifests(docs)] == ["a", "a"]
    with pytest.raises(ManifestError, match="no Secret"):
        sources_from_manifests([])


def test_literals_and_files(tmp_path: Path) -> None:
    assert {k: v.reveal() for k, v in values_from_literals(["a=1=2", "b="]).items()} == {
        "a": b"1=2",
        "b": b"",
    }
    with pytest.raises(SecretSourceError, match="KEY=VALUE"):
        values_from_literals(["novalue"])
    with pytest.raises(SecretSourceError, match="given twice"):
        values_from_literals(["a=1", "a=2"])
    (tmp_path / "cert.pem").write_bytes(b"\x00\xffbinary")
    files = values_from_files([str(tmp_path / "cert.pem"), f"other={tmp_path / 'cert.pem'}"])
    assert {k: v.reveal() for k, v in files.items()} == {
        "cert.pem": b"\x00\xffbinary",
        "other": b"\x00\xffbinary",
    }
    with pytest.raises(SecretSourceError, match="cannot read"):
        values_from_files([str(tmp_path / "absent")])


@pytest.mark.parametrize(
    ("name", "key", "needle"),
    [
        ("Upper", "k", "DNS-1123"),
        ("a" * 129, "k", "DNS-1123"),
        ("ok", "bad/key", "only letters"),
        ("ok", ".hidden", "no leading"),
    ],
)
def test_names_and_keys(name: str, key: str, needle: str) -> None:
    with pytest.raises(SecretSourceError, match=needle):
        SecretSource(name=name, values={key: Secret(b"v")})


def test_store_failure_names_the_key(signing_key: ec.EllipticCurvePrivateKey) -> None:
    calls: list[str] = []

    def failing(path: ResourcePath, data: bytes) -> None:
        calls.append(str(path))
        if len(calls) == 2:
            raise UpstreamError("broker down")

    source = SecretSource(name="s", values={"a": Secret(b"1"), "b": Secret(b"2")})
    with pytest.raises(UpstreamError, match=r"storing 'b' at r/s/b failed \(already stored: 'a'\)"):
        sealed_secret_manifest(source, repo="r", store=failing, signing_key=signing_key, kid="k")


def test_bad_repo_is_refused(signing_key: ec.EllipticCurvePrivateKey) -> None:
    source = SecretSource(name="s", values={"a": Secret(b"1")})
    with pytest.raises(SecretSourceError, match="cannot name a broker resource"):
        sealed_secret_manifest(
            source, repo="../x", store=Recorder(), signing_key=signing_key, kid="k"
        )
