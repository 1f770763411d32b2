"""`custodes k8s` through the real command entry point (in process): secret against a real
broker, pod, validate, webhook check-config; exit codes 1 for refusals, 2 for usage."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.cli import COMMANDS, main
from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.k8s.guestconfig import brokers_in
from custodes.k8s.schema import validate_object
from custodes.k8s.yamlio import load_documents
from custodes.protocol.resource import ResourcePath
from custodes.sealed.format import SealedSecret
from custodes.sealed.keys import private_jwk
from k8s_helpers import make_pki
from live_broker import LiveBroker

REPO = Path(__file__).resolve().parents[3]
BROKER = "https://broker.bank.example:8443"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["k8s", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_registered() -> None:
    assert COMMANDS["k8s"] == ("custodes.cli.k8s", "Kubernetes manifests and the admission webhook")


def test_secret_against_a_real_broker(
    broker: LiveBroker,
    tmp_path: Path,
    signing_key: ec.EllipticCurvePrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "signing.jwk"
    key_file.write_text(json.dumps(private_jwk(signing_key, "k")))
    (tmp_path / "cert.bin").write_bytes(secrets.token_bytes(48))
    literal = secrets.token_urlsafe(24)
    out_file = tmp_path / "sealed.yaml"
    common = [
        "--repo", "default",
        "--url", broker.url,
        "--key", str(broker.data_dir / "admin-key.pem"),
        "--signing-key", str(key_file),
        "--kid", "kbs:///default/signing-key/sealed",
    ]  # fmt: skip
    code, out, err = run(
        capsys, "secret", "--name", "db", "--namespace", "payments",
        "--from-literal", f"password={literal}", *common, "--out", str(out_file),
    )  # fmt: skip
    assert code == 0, err
    assert out == "" and "stored 1 value(s) of Secret 'db'" in err
    text = out_file.read_text()
    assert literal not in text and base64.b64encode(literal.encode()).decode() not in text
    (doc,) = load_documents(text)
    validate_object(doc)
    sealed = SealedSecret.parse(base64.b64decode(doc["data"]["password"]).decode())
    assert sealed.kid == "kbs:///default/signing-key/sealed"
    with broker.admin() as admin:
        assert "default/db/password" in admin.list_resources()

    # From a plain Secret manifest (stdout output); binary values survive.
    plain = tmp_path / "plain.yaml"
    value = (tmp_path / "cert.bin").read_bytes()
    plain.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: tls-material, namespace: payments}\n"
        f"data:\n  cert.bin: {base64.b64encode(value).decode()}\n"
    )
    code, out, err = run(capsys, "secret", "--from-manifest", str(plain), *common)
    assert code == 0, err
    assert base64.b64encode(value).decode() not in out
    (doc,) = load_documents(out)
    assert doc["metadata"] == {
        "name": "tls-material",
        "namespace": "payments",
        "labels": {"app.kubernetes.io/managed-by": "custodes", "custodes.io/sealed": "true"},
        "annotations": {"custodes.io/sealed-kid": "kbs:///default/signing-key/sealed"},
    }


def test_secret_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "signing.jwk"
    key_file.write_text(json.dumps(private_jwk(ec.generate_private_key(ec.SECP256R1()), "k")))
    base = [
        "--repo",
        "r",
        "--url",
        "http://127.0.0.1:9",
        "--signing-key",
        str(key_file),
        "--kid",
        "k",
    ]
    code, _, err = run(capsys, "secret", "--from-literal", "a=b", *base, "--key", str(key_file))
    assert code == 1 and "--name is required" in err
    code, _, err = run(
        capsys,
        "secret",
        "--name",
        "s",
        "--from-literal",
        "a=b",
        *base[:-2],
        "--kid",
        "k",
        "--key",
        str(tmp_path / "absent.pem"),
    )
    assert code == 1 and "admin key" in err
    code, _, err = run(
        capsys,
        "secret",
        "--name",
        "s",
        "--from-literal",
        "a=b",
        "--repo",
        "../x",
        *base[2:],
        "--key",
        "k",
    )
    assert code == 1 and "resource path segment" in err
    with pytest.raises(SystemExit) as exc:
        main(["k8s", "secret", "--name", "s", *base])  # no source
    assert exc.value.code == 2
    assert "give --from-literal and/or --from-file, or --from-manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["k8s", "secret", "--from-manifest", "m.yaml", "--from-literal", "a=b", *base])
    assert exc.value.code == 2
    assert "--from-manifest cannot be combined" in capsys.readouterr().err
    (tmp_path / "a").write_text("from a file")
    code, _, err = run(
        capsys, "secret", "--name", "s", "--from-literal", "a=b",
        "--from-file", str(tmp_path / "a"), *base, "--key", str(key_file),
    )  # fmt: skip
    assert code == 1 and "key 'a' is given twice (--from-literal and --from-file)" in err


def test_secret_mixes_literal_and_file_values(
    broker: LiveBroker,
    tmp_path: Path,
    signing_key: ec.EllipticCurvePrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As with kubectl, --from-literal and --from-file go together in one Secret."""
    key_file = tmp_path / "signing.jwk"
    key_file.write_text(json.dumps(private_jwk(signing_key, "k")))
    cert = tmp_path / "tls.crt"
    cert.write_bytes(secrets.token_bytes(40))
    code, out, err = run(
        capsys, "secret", "--name", "mixed", "--repo", "default",
        "--from-literal", "user=admin", "--from-file", f"cert={cert}",
        "--from-file", str(cert), "--from-literal", "password=s3cret",
        "--url", broker.url, "--key", str(broker.data_dir / "admin-key.pem"),
        "--signing-key", str(key_file), "--kid", "kbs:///default/signing-key/sealed",
        "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)  # one Secret: the object itself, as `kubectl -o json`
    assert doc["kind"] == "Secret" and sorted(doc["data"]) == [
        "cert",
        "password",
        "tls.crt",
        "user",
    ]
    validate_object(doc)
    with broker.admin() as admin:
        stored = set(admin.list_resources())
        assert {f"default/mixed/{k}" for k in ("user", "cert", "tls.crt", "password")} <= stored
        assert admin.resource_info(ResourcePath("default", "mixed", "cert"))["size"] == 40


def test_pod(tmp_path: Path, capsys: pytest.CaptureFixture[str], vectors: Path) -> None:
    pki = make_pki(tmp_path)
    policy = tmp_path / "policy.rego"
    policy.write_text("package agent_policy\ndefault ExecProcessRequest := false\n")
    source = vectors / "guest-components" / "kata-pods" / "pod-sealed-secret-as-file.yaml"
    out_file = tmp_path / "out.yaml"
    code, out, err = run(
        capsys, "pod", "-f", str(source), "--runtime-class", "kata-qemu-tdx",
        "--broker-url", BROKER, "--broker-cert", str(pki.ca_pem), "--policy", str(policy),
        "--entrypoint-wrap", "--out", str(out_file),
    )  # fmt: skip
    assert code == 0 and out == "", err
    assert 'reads Secret "not-sealed-secret"' in err and "init-data sha256 digest" in err
    (pod,) = load_documents(out_file.read_text())
    validate_object(pod)
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-tdx"
    init_data = decode_annotation(pod["metadata"]["annotations"][ANNOTATION_KEY])
    assert {r.url for r in brokers_in(init_data).refs} == {BROKER}
    assert init_data.data["policy.rego"] == policy.read_text()
    assert pod["spec"]["containers"][0]["command"][:6] == [
        "custodes", "run", "--url", BROKER, "--cacert", "/etc/custodes/broker/ca.pem",
    ]  # fmt: skip


def test_pod_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: app, image: 'app:1', args: [--serve]}]}\n"
    )
    code, _, err = run(
        capsys, "pod", "-f", str(manifest), "--broker-url", BROKER, "--entrypoint-wrap"
    )
    assert code == 1 and "ENTRYPOINT" in err and "--command" in err
    code, out, err = run(
        capsys, "pod", "-f", str(manifest), "--broker-url", BROKER, "--entrypoint-wrap",
        "--command", "/opt/app/bin/server --verbose",
    )  # fmt: skip
    assert code == 0, err
    (pod,) = load_documents(out)
    assert pod["spec"]["containers"][0]["command"][-3:] == [
        "--",
        "/opt/app/bin/server",
        "--verbose",
    ]
    assert pod["spec"]["containers"][0]["args"] == ["--serve"]
    code, _, err = run(capsys, "pod", "-f", str(manifest), "--broker-url", BROKER, "--command", "x")
    assert code == 1 and "only matters with --entrypoint-wrap" in err
    code, _, err = run(capsys, "pod", "-f", str(manifest), "--broker-url", "broker:8443")
    assert code == 1 and "http" in err
    code, _, err = run(capsys, "pod", "-f", str(manifest), "--broker-url", "http://10.0.0.7:8080")
    assert code == 0 and "plain HTTP" in err
    code, _, err = run(capsys, "pod", "-f", str(tmp_path / "absent.yaml"), "--broker-url", BROKER)
    assert code == 1 and "cannot read" in err


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "validate", "-f", str(REPO / "deploy" / "webhook" / "webhook-server.yaml")
    )
    assert code == 0 and "5 object(s) valid against Kubernetes 1.31" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {prots: []}\n")
    code, _, err = run(capsys, "validate", "-f", str(bad))
    assert code == 1 and "Service/s does not validate" in err and "'prots'" in err
    custom = tmp_path / "custom.yaml"
    custom.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    code, out, err = run(capsys, "validate", "-f", str(custom))
    assert code == 0 and "no schema" in err and "0 object(s)" in out


def test_webhook_check_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "webhook",
        "check-config",
        "--config",
        str(REPO / "deploy" / "webhook" / "webhook.sample.toml"),
    )
    assert code == 0 and "namespace payments: tenant bank" in out
    (tmp_path / "bad.toml").write_text("[webhook]\nmutate = 1\n")
    code, _, err = run(capsys, "webhook", "check-config", "--config", str(tmp_path / "bad.toml"))
    assert code == 1 and "webhook.mutate must be true or false" in err


def test_webhook_serve_refuses_bad_listen_and_missing_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(REPO / "deploy" / "webhook" / "webhook.sample.toml")
    pki = make_pki(tmp_path)
    tls = ["--tls-cert", str(pki.cert_pem), "--tls-key", str(pki.key_pem)]
    code, _, err = run(capsys, "webhook", "serve", *tls, "--config", config, "--listen", "nope")
    assert code == 1 and "HOST:PORT" in err
    code, _, err = run(
        capsys, "webhook", "serve", "--tls-cert", str(tmp_path / "absent.pem"),
        "--tls-key", str(pki.key_pem), "--config", config,
    )  # fmt: skip
    assert code == 1 and "TLS certificate" in err
