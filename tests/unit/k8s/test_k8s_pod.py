"""Making workloads confidential; every output validates against the Kubernetes schemas."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.k8s.errors import EntrypointUnknown, ManifestError, ManifestSchemaError
from custodes.k8s.guestconfig import brokers_in, normalize_url
from custodes.k8s.pod import (
    CA_ANNOTATION,
    CA_VOLUME,
    ConfidentialSettings,
    make_confidential,
)
from custodes.k8s.podcheck import PodRules, check_pod
from custodes.k8s.schema import validate_object
from custodes.k8s.workloads import pod_template
from custodes.k8s.yamlio import dump_documents, load_documents
from custodes.types.json import JsonObject
from k8s_helpers import make_pki, make_pod

BROKER = "https://broker.bank.example:8443"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      runtimeClassName: runc
      containers:
        - name: web
          image: shop:1
          command: [python, app.py]
          args: [--port, "8080"]
          envFrom: [{secretRef: {name: shop-sealed}}]
          volumeMounts: [{name: creds, mountPath: /etc/creds}]
        - name: sidecar
          image: proxy:1
          args: [--upstream, "localhost:8080"]
      volumes:
        - {name: creds, secret: {secretName: shop-creds}}
---
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  selector: {app: shop}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: job:1, command: [./run]}]
"""


def _settings(**changes: object) -> ConfidentialSettings:
    base: dict[str, object] = {"broker_url": BROKER}
    base.update(changes)
    return ConfidentialSettings(**base)  # type: ignore[arg-type]


def test_every_workload_kind_gets_runtime_class_and_init_data() -> None:
    docs = load_documents(DEPLOYMENT)
    original = copy.deepcopy(docs)
    result = make_confidential(docs, _settings())
    assert docs == original  # the input is untouched
    deployment, service, cronjob = result.docs
    assert service == original[1]
    rules = PodRules(tenant="bank", brokers=frozenset({normalize_url(BROKER)}))
    for obj in (deployment, cronjob):
        template = pod_template(obj)
        assert template.spec["runtimeClassName"] == "kata-qemu-snp"
        init_data = decode_annotation(template.metadata["annotations"][ANNOTATION_KEY])
        assert init_data.digest == result.init_data.digest
        assert {r.url for r in brokers_in(init_data).refs} == {BROKER}
        # What the webhook would say of the pod: only the Secret reads remain.
        pod = {"metadata": template.metadata, "spec": template.spec}
        assert all("Secret" in v.reason for v in check_pod(pod, rules))
    assert pod_template(deployment).metadata["labels"] == {"app": "shop"}
    warned = [w for w in result.warnings if "reads Secret" in w]
    assert len(warned) == 2 and "spec.template.spec.volumes[0].secret" in warned[1]
    # The YAML round trip keeps the annotation byte for byte.
    again = load_documents(dump_documents(result.docs))
    assert again == result.docs


def test_entrypoint_wrap_keeps_args_and_finds_secret_mounts(tmp_path: Path) -> None:
    cert = make_pki(tmp_path).ca_pem.read_text()
    (deployment,) = load_documents(DEPLOYMENT.split("---")[0])
    result = make_confidential(
        [deployment],
        _settings(
            entrypoint_wrap=True,
            broker_cert=cert,
            containers=frozenset({"web"}),
            custodes_bin="/usr/local/bin/custodes",
        ),
    )
    template = pod_template(result.docs[0])
    web, sidecar = template.spec["containers"]
    assert web["command"] == [
        "/usr/local/bin/custodes",
        "run",
        "--url",
        BROKER,
        "--cacert",
        "/etc/custodes/broker/ca.pem",
        "--secret-mount",
        "/etc/creds",
        "--",
        "python",
        "app.py",
    ]
    assert web["args"] == ["--port", "8080"]
    assert {"name": CA_VOLUME, "mountPath": "/etc/custodes/broker", "readOnly": True} in web[
        "volumeMounts"
    ]
    assert "command" not in sidecar  # not selected
    assert template.metadata["annotations"][CA_ANNOTATION] == cert
    ca_volume = template.spec["volumes"][-1]
    assert ca_volume["name"] == CA_VOLUME
    assert ca_volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == (
        f"metadata.annotations['{CA_ANNOTATION}']"
    )
    # Wrapping again changes nothing.
    twice = make_confidential(
        result.docs,
        _settings(entrypoint_wrap=True, broker_cert=cert, containers=frozenset({"web"})),
    )
    assert pod_template(twice.docs[0]).spec["containers"][0]["command"] == web["command"]


def test_entrypoint_only_is_refused_unless_a_command_is_given() -> None:
    (deployment,) = load_documents(DEPLOYMENT.split("---")[0])
    with pytest.raises(
        EntrypointUnknown, match=r'containers\[1\] \(container "sidecar"\).*--command'
    ):
        make_confidential([deployment], _settings(entrypoint_wrap=True))
    result = make_confidential(
        [deployment], _settings(entrypoint_wrap=True, command=("/usr/bin/proxy", "-v"))
    )
    sidecar = pod_template(result.docs[0]).spec["containers"][1]
    assert sidecar["command"][-3:] == ["--", "/usr/bin/proxy", "-v"]
    assert sidecar["args"] == ["--upstream", "localhost:8080"]
    assert "--cacert" not in sidecar["command"]


def test_upstream_vector_pod_becomes_valid_confidential_pod(vectors: Path) -> None:
    text = (vectors / "guest-components" / "kata-pods" / "pod-sealed-secret.yaml").read_text()
    result = make_confidential(
        load_documents(text), _settings(runtime_class="kata-qemu-tdx", entrypoint_wrap=True)
    )
    (pod,) = result.docs
    validate_object(pod)
    assert pod["spec"]["runtimeClassName"] == "kata-qemu-tdx"
    assert pod["spec"]["containers"][0]["command"][:4] == ["custodes", "run", "--url", BROKER]


def test_runtime_class_warnings() -> None:
    pod = make_pod(containers=[{"name": "a", "image": "i", "command": ["x"]}])
    dev = make_confidential([pod], _settings(runtime_class="kata-qemu-coco-dev"))
    assert any("runs no TEE" in w for w in dev.warnings)
    odd = make_confidential([pod], _settings(runtime_class="my-kata"))
    assert any("not one of the known CoCo classes" in w for w in odd.warnings)


def test_policy_goes_into_init_data() -> None:
    policy = "package agent_policy\ndefault ExecProcessRequest := false\n"
    result = make_confidential([make_pod()], _settings(policy=policy))
    assert result.init_data.data["policy.rego"] == policy


@pytest.mark.parametrize(
    ("docs", "error", "needle"),
    [
        (
            [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}],
            ManifestError,
            "no workload",
        ),
        (
            [make_pod(containers=[{"name": "a", "image": "i", "ports": [{"containerPort": "x"}]}])],
            ManifestSchemaError,
            r"containers\[0\]\.ports\[0\]\.containerPort",
        ),
        (
            [make_pod(containers=[{"name": "a", "image": "i", "command": "sh -c x"}])],
            ManifestSchemaError,
            "command",
        ),
    ],
)
def test_refusals(docs: list[JsonObject], error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle):
        make_confidential(docs, _settings())


def test_command_not_a_list_is_refused_when_wrapping() -> None:
    pod = make_pod(containers=[{"name": "a", "image": "i", "command": "sh -c x"}])
    with pytest.raises(ManifestError, match="list of strings"):
        make_confidential([pod], _settings(entrypoint_wrap=True))


def test_custom_resources_pass_through_with_a_warning() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    result = make_confidential([make_pod(), widget], _settings())
    assert result.docs[1] == widget
    assert any("Widget/w: no Kubernetes 1.31 schema" in w for w in result.warnings)
    unvalidated = make_confidential([make_pod(), widget], _settings(), validate_version=None)
    assert not any("schema" in w for w in unvalidated.warnings)


def test_ca_volume_and_mount_conflicts(tmp_path: Path) -> None:
    cert = make_pki(tmp_path).ca_pem.read_text()
    settings = _settings(entrypoint_wrap=True, broker_cert=cert)
    taken_mount = make_pod(
        containers=[
            {
                "name": "a",
                "image": "i",
                "command": ["x"],
                "volumeMounts": [{"name": "mine", "mountPath": "/etc/custodes/broker"}],
            }
        ],
        volumes=[{"name": "mine", "emptyDir": {}}],
    )
    with pytest.raises(ManifestError, match="already mounts something at /etc/custodes/broker"):
        make_confidential([taken_mount], settings)
    taken_name = make_pod(
        containers=[{"name": "a", "image": "i", "command": ["x"]}],
        volumes=[{"name": CA_VOLUME, "emptyDir": {}}],
    )
    with pytest.raises(ManifestError, match="different volume is already named"):
        make_confidential([taken_name], settings)
