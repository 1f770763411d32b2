"""deploy/: the Kustomize base and overlays (rendered with `kubectl kustomize`, every object
validated against the Kubernetes 1.31 schemas), the webhook configurations, and a minimal lint
of the Containerfile. There is no container engine here, so the image itself is not built."""

from __future__ import annotations

import base64
import re
import secrets
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes.k8s.schema import validate_object
from custodes.k8s.yamlio import load_documents
from custodes.kbs.config import load_config
from custodes.types.json import JsonObject
from k8s_helpers import make_pki

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
OPERATOR_FILES = (
    "master-key",
    "ear-signing-key.pem",
    "audit-signing-key.pem",
    "admin.pub.pem",
    "tls.crt",
    "tls.key",
    "postgres-password",
)


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _operator_files(directory: Path, tmp: Path) -> dict[str, bytes]:
    """What an operator puts in base/secrets: real keys, made here."""
    pki = make_pki(tmp, host="custodes-broker.custodes.svc")
    admin = ed25519.Ed25519PrivateKey.generate().public_key()
    files = {
        "master-key": base64.b64encode(secrets.token_bytes(32)) + b"\n",
        "ear-signing-key.pem": _pem_private(ec.generate_private_key(ec.SECP256R1())),
        "audit-signing-key.pem": _pem_private(ec.generate_private_key(ec.SECP256R1())),
        "admin.pub.pem": admin.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "tls.crt": pki.cert_pem.read_bytes(),
        "tls.key": pki.key_pem.read_bytes(),
        "postgres-password": secrets.token_hex(32).encode(),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders the overlays")
    return kubectl


def _render(tmp_path: Path, overlay: str) -> tuple[list[JsonObject], dict[str, bytes]]:
    tree = tmp_path / "kustomize"
    shutil.copytree(DEPLOY / "kustomize", tree)
    files = _operator_files(tree / "base" / "secrets", tmp_path)
    result = subprocess.run(
        [_kubectl(), "kustomize", str(tree / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return load_documents(result.stdout), files


def _one(objects: list[JsonObject], kind: str, name_prefix: str) -> JsonObject:
    found = [
        o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)
    ]
    assert len(found) == 1, f"{kind}/{name_prefix}*: {len(found)} found"
    return found[0]


@pytest.mark.parametrize(("overlay", "replicas"), [("single-replica", 1), ("multi-replica", 3)])
def test_overlay_renders_and_validates(tmp_path: Path, overlay: str, replicas: int) -> None:
    objects, files = _render(tmp_path, overlay)
    for obj in objects:
        validate_object(obj)  # strict: an unknown field anywhere fails
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "custodes"
    kinds = sorted(o["kind"] for o in objects)
    expected = [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        *(["PodDisruptionBudget"] if replicas > 1 else []),
        *["Secret"] * 5,
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    assert kinds == expected

    deployment = _one(objects, "Deployment", "custodes-broker")
    assert deployment["spec"]["replicas"] == replicas
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/custodes:0.1.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == ("/healthz", "https", "HTTPS")
    assert set(container["resources"]) == {"requests", "limits"}
    assert (
        pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    )
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["automountServiceAccountToken"] is False

    # Every Secret and ConfigMap the broker uses is in the render (hash-suffixed names agree).
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(env) == {"CUSTODES_POSTGRES_DSN", "PGPASSWORD", "CUSTODES_MASTER_KEY"}
    for ref in env.values():
        assert ("Secret", ref["name"]) in names
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in names
            assert volume["secret"]["defaultMode"] == 0o440
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names

    # The Secrets hold exactly what the operator provided, and the DSN carries no password.
    data: dict[str, bytes] = {}
    for obj in objects:
        if obj["kind"] == "Secret":
            data.update({k: base64.b64decode(v) for k, v in obj["data"].items()})
    provided = {
        "master-key": files["master-key"],
        "ear-signing-key.pem": files["ear-signing-key.pem"],
        "audit-signing-key.pem": files["audit-signing-key.pem"],
        "admin.pub.pem": files["admin.pub.pem"],
        "tls.crt": files["tls.crt"],
        "tls.key": files["tls.key"],
        "password": files["postgres-password"],
    }
    assert {k: v for k, v in data.items() if k != "dsn"} == provided
    assert files["postgres-password"] not in data["dsn"]
    assert data["dsn"].startswith(b"host=custodes-postgres ")

    # serve.toml: PostgreSQL store, paths that the mounts provide, only known settings.
    config_map = _one(objects, "ConfigMap", "custodes-broker-config")
    serve = tomllib.loads(config_map["data"]["serve.toml"])
    assert serve["storage"]["backend"] == "postgres"
    serve_file = tmp_path / "serve.toml"
    serve_file.write_text(config_map["data"]["serve.toml"])
    loaded = load_config(serve_file)  # the broker's own loader: every setting known and valid
    assert loaded.storage.backend == "postgres" and loaded.storage.master_key_env == (
        "CUSTODES_MASTER_KEY"
    )
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for path in (
        serve["server"]["tls_cert"],
        serve["server"]["tls_key"],
        serve["token"]["signing_key"],
        *serve["admin"]["public_keys"],
    ):
        assert any(path.startswith(m + "/") for m in mounts), path
    assert f"{serve['server']['data_dir']}/audit-signing-key.pem" in mounts

    postgres = _one(objects, "StatefulSet", "custodes-postgres")
    pg = postgres["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/postgres/password"} in pg[
        "env"
    ]
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    _one(objects, "Service", "custodes-postgres")
    _one(objects, "Service", "custodes-broker")

    if replicas > 1:
        pdb = _one(objects, "PodDisruptionBudget", "custodes-broker")
        assert pdb["spec"]["minAvailable"] == 2
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    else:
        assert "topologySpreadConstraints" not in pod


def test_rendering_fails_without_the_operator_files(tmp_path: Path) -> None:
    kubectl = _kubectl()
    tree = tmp_path / "kustomize"
    shutil.copytree(DEPLOY / "kustomize", tree)
    result = subprocess.run(
        [kubectl, "kustomize", str(tree / "overlays" / "single-replica")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "secrets/" in result.stderr


def test_no_key_or_password_is_in_the_repository() -> None:
    assert sorted(p.name for p in (DEPLOY / "kustomize" / "base" / "secrets").iterdir()) == [
        ".gitignore",
        "README.md",
    ]
    for path in DEPLOY.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        assert "PRIVATE KEY-----" not in text, path
        if path.suffix in (".yaml", ".yml"):
            for doc in load_documents(text):
                if doc.get("kind") == "Secret":
                    raise AssertionError(f"{path}: a Secret object in the repository")
    kustomization = load_documents(
        (DEPLOY / "kustomize" / "base" / "kustomization.yaml").read_text()
    )[0]
    for generator in kustomization["secretGenerator"]:
        assert all(f.split("=", 1)[1].startswith("secrets/") for f in generator.get("files", []))
        assert all("password" not in literal for literal in generator.get("literals", []))


PLACEHOLDER = "UkVQTEFDRS1XSVRILUJBU0U2NC1PRi1USEUtV0VCSE9PSy1DQS1DRVJUSUZJQ0FURQ=="


@pytest.mark.parametrize(
    ("name", "kind", "path", "operations"),
    [
        (
            "validating-webhook.yaml",
            "ValidatingWebhookConfiguration",
            "/validate",
            ["CREATE", "UPDATE"],
        ),
        ("mutating-webhook.yaml", "MutatingWebhookConfiguration", "/mutate", ["CREATE"]),
    ],
)
def test_webhook_configurations(name: str, kind: str, path: str, operations: list[str]) -> None:
    text = (DEPLOY / "webhook" / name).read_text()
    (config,) = load_documents(text)
    validate_object(config)
    assert config["kind"] == kind
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["namespaceSelector"] == {"matchLabels": {"custodes.io/confidential": "true"}}
    (rule,) = hook["rules"]
    assert rule["operations"] == operations and "pods" in rule["resources"]
    service = hook["clientConfig"]["service"]
    assert (service["name"], service["namespace"], service["path"]) == (
        "custodes-webhook",
        "custodes-system",
        path,
    )
    assert hook["clientConfig"]["caBundle"] == PLACEHOLDER
    assert base64.b64decode(PLACEHOLDER).startswith(b"REPLACE-WITH-")
    header = text.split("apiVersion:")[0]  # the comments say how to replace it
    assert PLACEHOLDER in header or "see validating-webhook.yaml" in header
    assert PLACEHOLDER in (REPO / "docs" / "kubernetes.md").read_text()


def test_webhook_server_manifest() -> None:
    objects = load_documents((DEPLOY / "webhook" / "webhook-server.yaml").read_text())
    for obj in objects:
        validate_object(obj)
    namespace = _one(objects, "Namespace", "custodes-system")
    assert "custodes.io/confidential" not in namespace["metadata"].get("labels", {})
    deployment = _one(objects, "Deployment", "custodes-webhook")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["k8s", "webhook", "serve"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


# --- the Containerfile ----------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_lint() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    instructions = _instructions(text)
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms
    for image in froms:
        ref = image.split()[0]
        assert ref.startswith("docker.io/library/python:3.11"), ref
        tag = ref.split("@")[0].rsplit(":", 1)[1]
        # Pinned: an exact x.y.z release (or a digest), never a moving tag.
        assert "@sha256:" in ref or re.match(r"3\.11\.\d+-slim", tag), ref
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit()  # numeric: runAsNonRoot can verify it
    # No secret is built in: no key files copied, no secret-looking ENV/ARG values.
    for word, rest in instructions:
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|key|jwk)\b|secret", rest, re.IGNORECASE), rest
        if word in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|PASSWORD|TOKEN|DSN)\w*=", rest, re.IGNORECASE), rest
    assert "PRIVATE KEY" not in text
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f'"custodes=={version}"' in text
    healthcheck = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert len(healthcheck) == 1 and "healthcheck.py" in healthcheck[0]
    assert "/healthz" in (DEPLOY / "healthcheck.py").read_text()
    assert ("CMD", '["serve", "--config", "/etc/custodes/config/serve.toml"]') in instructions


def test_constraints_agree_with_pyproject() -> None:
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, line
            pins[name] = version
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^;\s]+)", requirement)
        assert match, requirement
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert pins.get(name) == match.group(2), requirement
