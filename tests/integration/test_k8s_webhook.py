"""The admission webhook over real HTTPS: `custodes k8s webhook serve` in a subprocess on a
free loopback port, with a CA and server certificate made here, and real AdmissionReview v1
requests sent by httpx verifying the server against that CA."""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation, encode_annotation
from custodes.k8s.guestconfig import broker_initdata, brokers_in
from custodes.k8s.schema import validate_object
from custodes.types.json import Json, JsonObject

REPO = Path(__file__).resolve().parents[2]
BROKER = "https://broker.bank.example:8443"
MAX_BODY = 256 * 1024
CONFIG = f"""
[webhook]
confidential_namespaces = "config"
mutate = true
default_runtime_class = "kata-qemu-snp"
max_body_bytes = {MAX_BODY}

[namespaces.payments]
tenant = "bank"
labels = {{ "custodes.io/confidential" = "true" }}
sealed_secrets = ["db-sealed"]

[namespaces.default]
labels = {{ "custodes.io/confidential" = "false" }}

[tenants.bank]
brokers = ["{BROKER}"]
broker_cert = "broker-ca.pem"
"""


# --- a CA, a server certificate for 127.0.0.1 --------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    broker_ca_pem: str


def _make_pki(directory: Path) -> Pki:
    ca_key, ca = _ca("webhook test CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("custodes-webhook"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _, broker_ca = _ca("bank broker CA")
    pki = Pki(
        directory / "ca.pem", directory / "tls.crt", directory / "tls.key", _pem(broker_ca).decode()
    )
    pki.ca.write_bytes(_pem(ca))
    pki.cert.write_bytes(_pem(server))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.key.chmod(0o600)  # a private key: the webhook refuses one others may read
    return pki


# --- the webhook, served by the real CLI ---------------------------------------------------


@dataclass
class Webhook:
    url: str
    client: httpx.Client
    pki: Pki


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    directory = tmp_path_factory.mktemp("webhook")
    pki = _make_pki(directory)
    (directory / "broker-ca.pem").write_text(pki.broker_ca_pem)
    (directory / "webhook.toml").write_text(CONFIG)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "custodes",
            "k8s",
            "webhook",
            "serve",
            "--tls-cert",
            str(pki.cert),
            "--tls-key",
            str(pki.key),
            "--config",
            str(directory / "webhook.toml"),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"https://127\.0\.0\.1:(\d+)", line)
    if match is None:
        proc.kill()
        pytest.fail(f"the webhook did not start: {line}{proc.stderr.read().decode()}")
    stderr = proc.stderr
    log: list[str] = [line]
    drainer = threading.Thread(
        target=lambda: log.extend(raw.decode() for raw in stderr), daemon=True
    )
    drainer.start()
    url = f"https://127.0.0.1:{match.group(1)}"
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=10)
    deadline = time.monotonic() + 20
    while True:
        try:
            if client.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the webhook did not answer /healthz:\n" + "".join(log))
            time.sleep(0.05)
    try:
        yield Webhook(url, client, pki)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drainer.join(timeout=5)
        stderr.close()


# --- requests ----------------------------------------------------------------------------


def _pod(**spec: Json) -> JsonObject:
    pod_spec: JsonObject = {
        "runtimeClassName": "kata-qemu-snp",
        "containers": [{"name": "app", "image": "registry.example/app:1", "command": ["./app"]}],
    }
    pod_spec.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "app",
            "namespace": "payments",
            "annotations": {ANNOTATION_KEY: encode_annotation(broker_initdata(BROKER))},
        },
        "spec": pod_spec,
    }


def _review(obj: JsonObject | None, *, namespace: str = "payments", **request: Json) -> JsonObject:
    body: JsonObject = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "name": "app",
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj,
        "oldObject": None,
        "dryRun": False,
    }
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def _send(hook: Webhook, review: JsonObject, path: str = "/validate") -> JsonObject:
    response = hook.client.post(f"{hook.url}{path}", json=review)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == review["request"]["uid"]
    result: JsonObject = answer["response"]
    return result


# --- a minimal RFC 6902 applier (the jsonpatch package is not a dependency) -----------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: Json, ops: list[JsonObject]) -> Json:
    doc = copy.deepcopy(document)
    for op in ops:
        assert op["path"].startswith("/")
        *parents, last = [_unescape(t) for t in op["path"][1:].split("/")]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        key = _unescape(last)
        if op["op"] in ("add", "replace"):
            if isinstance(target, list):
                index = len(target) if key == "-" else int(key)
                if op["op"] == "add":
                    target.insert(index, copy.deepcopy(op["value"]))
                else:
                    target[index] = copy.deepcopy(op["value"])
            else:
                if op["op"] == "replace":
                    assert key in target
                target[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del target[int(key) if isinstance(target, list) else key]
        elif op["op"] == "test":
            assert (target[int(key)] if isinstance(target, list) else target[key]) == op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return doc


def test_apply_patch_itself() -> None:
    doc = {"a": {"b~c/d": 1}, "l": [1, 3]}
    ops: list[JsonObject] = [
        {"op": "add", "path": "/a/x", "value": {"y": 2}},
        {"op": "replace", "path": "/a/b~0c~1d", "value": 5},
        {"op": "add", "path": "/l/1", "value": 2},
        {"op": "add", "path": "/l/-", "value": 4},
        {"op": "remove", "path": "/a/x"},
        {"op": "test", "path": "/l/3", "value": 4},
    ]
    assert apply_patch(doc, ops) == {"a": {"b~c/d": 5}, "l": [1, 2, 3, 4]}


# --- the cases ---------------------------------------------------------------------------


def test_accepts_a_good_pod(webhook: Webhook) -> None:
    pod = _pod(volumes=[{"name": "db", "secret": {"secretName": "db-sealed"}}])
    answer = _send(webhook, _review(pod))
    assert answer["allowed"] is True
    assert "patch" not in answer and "status" not in answer


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (
            {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [
                            {
                                "name": "DB",
                                "valueFrom": {"secretKeyRef": {"name": "db-plain", "key": "p"}},
                            }
                        ],
                    }
                ]
            },
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
        ),
        (
            {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "envFrom": [{"secretRef": {"name": "db-plain"}}],
                    }
                ]
            },
            "spec.containers[0].envFrom[0].secretRef",
        ),
        (
            {"volumes": [{"name": "v", "secret": {"secretName": "db-plain"}}]},
            "spec.volumes[0].secret",
        ),
        (
            {
                "volumes": [
                    {"name": "v", "projected": {"sources": [{"secret": {"name": "db-plain"}}]}}
                ]
            },
            "spec.volumes[0].projected.sources[0].secret",
        ),
    ],
    ids=["env", "envFrom", "volume", "projected"],
)
def test_rejects_plain_secrets(webhook: Webhook, spec: dict[str, Json], path: str) -> None:
    answer = _send(webhook, _review(_pod(**spec)))
    assert answer["allowed"] is False
    assert answer["status"]["code"] == 403
    message = answer["status"]["message"]
    assert f"{path}: " in message and 'Secret "db-plain"' in message
    assert answer["warnings"] == [w for w in answer["warnings"] if w.startswith(path)]


def test_rejects_a_missing_runtime_class(webhook: Webhook) -> None:
    pod = _pod()
    del pod["spec"]["runtimeClassName"]
    answer = _send(webhook, _review(pod))
    assert answer["allowed"] is False
    assert "spec.runtimeClassName: missing" in answer["status"]["message"]
    pod["spec"]["runtimeClassName"] = "runc"
    answer = _send(webhook, _review(pod))
    assert (
        "spec.runtimeClassName: 'runc' is not a CoCo runtime class" in answer["status"]["message"]
    )


def test_rejects_a_foreign_broker_in_init_data(webhook: Webhook) -> None:
    pod = _pod()
    pod["metadata"]["annotations"][ANNOTATION_KEY] = encode_annotation(
        broker_initdata("https://attacker.example:8443")
    )
    answer = _send(webhook, _review(pod))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert f"metadata.annotations[{ANNOTATION_KEY}]: aa.toml: token_configs.kbs.url" in message
    assert '"https://attacker.example:8443" is not a broker of tenant "bank"' in message


def test_accepts_a_non_confidential_namespace(webhook: Webhook) -> None:
    pod = _pod(volumes=[{"name": "v", "secret": {"secretName": "db-plain"}}])
    del pod["spec"]["runtimeClassName"]
    pod["metadata"] = {"name": "plain", "namespace": "default"}
    for namespace in ("default", "unlisted"):
        for path in ("/validate", "/mutate"):
            answer = _send(webhook, _review(pod, namespace=namespace), path)
            assert answer == {"uid": answer["uid"], "allowed": True}


def test_mutate_injects_runtime_class_and_init_data(webhook: Webhook) -> None:
    pod = _pod(volumes=[{"name": "db", "secret": {"secretName": "db-sealed"}}])
    del pod["spec"]["runtimeClassName"]
    del pod["metadata"]["annotations"]
    # Without mutation the same pod is refused for both.
    refused = _send(webhook, _review(pod))
    assert [w.split(":")[0] for w in refused["warnings"]] == [
        "spec.runtimeClassName",
        f"metadata.annotations[{ANNOTATION_KEY}]",
    ]
    answer = _send(webhook, _review(pod), "/mutate")
    assert answer["allowed"] is True and answer["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(answer["patch"], validate=True))
    patched = apply_patch(pod, ops)
    assert patched["spec"]["runtimeClassName"] == "kata-qemu-snp"
    init_data = decode_annotation(patched["metadata"]["annotations"][ANNOTATION_KEY])
    assert {r.url for r in brokers_in(init_data).refs} == {BROKER}
    assert webhook.pki.broker_ca_pem in init_data.data["aa.toml"]
    validate_object(patched)
    assert _send(webhook, _review(patched))["allowed"] is True
    # The mutating endpoint still refuses what it cannot fix.
    pod["spec"]["volumes"][0]["secret"]["secretName"] = "db-plain"
    assert _send(webhook, _review(pod), "/mutate")["allowed"] is False


def test_wrong_kind_is_refused_with_a_reason(webhook: Webhook) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    answer = _send(
        webhook, _review(deployment, kind={"group": "apps", "version": "v1", "kind": "Deployment"})
    )
    assert answer["allowed"] is False
    assert answer["status"] == {
        "code": 400,
        "reason": "BadRequest",
        "message": "this webhook reviews v1 Pods, not apps/v1 Deployment",
    }
    secret_object = _send(webhook, _review({"apiVersion": "v1", "kind": "Secret"}))
    assert (
        secret_object["allowed"] is False and "not a v1 Pod" in secret_object["status"]["message"]
    )


def _status(response: httpx.Response, code: int) -> str:
    assert response.status_code == code, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    message: str = body["message"]
    return message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"this is not json", "body is not JSON"),
        (b'{"apiVersion": "v1", "kind": "Pod"}', "expected apiVersion 'admission.k8s.io/v1'"),
        (
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}',
            "expected apiVersion",
        ),
        (json.dumps({**_review(None), "request": {"kind": {}}}).encode(), "request.uid"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request"),
        (b"", "body is not JSON"),
    ],
    ids=["garbage", "wrong-kind", "wrong-version", "no-uid", "no-request", "empty"],
)
def test_malformed_bodies_get_400_with_a_message(
    webhook: Webhook, body: bytes, needle: str
) -> None:
    for path in ("/validate", "/mutate"):
        response = webhook.client.post(
            f"{webhook.url}{path}", content=body, headers={"Content-Type": "application/json"}
        )
        message = _status(response, 400)
        assert message.startswith("malformed AdmissionReview: ") and needle in message


def test_transport_level_refusals(webhook: Webhook) -> None:
    review = json.dumps(_review(_pod())).encode()
    response = webhook.client.post(
        f"{webhook.url}/validate", content=review, headers={"Content-Type": "text/plain"}
    )
    assert "application/json" in _status(response, 415)
    too_big = json.dumps(_review(_pod(), padding="x" * MAX_BODY)).encode()
    response = webhook.client.post(
        f"{webhook.url}/validate", content=too_big, headers={"Content-Type": "application/json"}
    )
    assert "larger than" in _status(response, 413)
    assert webhook.client.get(f"{webhook.url}/validate").status_code == 405
    assert webhook.client.get(f"{webhook.url}/healthz").json() == {"status": "ok"}


def test_tls_is_real(webhook: Webhook) -> None:
    """Only HTTPS is served, and a client that trusts another CA refuses the server."""
    port = webhook.url.rsplit(":", 1)[1]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{webhook.url}/healthz", timeout=5)  # system roots do not know our CA


def test_container_healthcheck_script(webhook: Webhook) -> None:
    """deploy/healthcheck.py (the image's HEALTHCHECK) against a real HTTPS /healthz."""
    script = [sys.executable, str(REPO / "deploy" / "healthcheck.py")]

    def check(url: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CUSTODES_HEALTHZ_URL": url}
        return subprocess.run(script, env=env, capture_output=True, text=True, timeout=30)

    assert check(f"{webhook.url}/healthz").returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = check(f"https://127.0.0.1:{closed}/healthz")
    assert down.returncode == 1 and "healthcheck:" in down.stderr
    assert check(f"{webhook.url}/nothing-here").returncode == 1
