"""AdmissionReview v1 parsing and decisions, without HTTP (the HTTPS tests are in
tests/integration/test_k8s_webhook.py)."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import pytest

from custodes.initdata.encoding import ANNOTATION_KEY, encode_annotation
from custodes.k8s.admission import AdmissionRequest, parse_json, parse_review, review
from custodes.k8s.errors import AdmissionReviewError
from custodes.k8s.guestconfig import broker_initdata
from custodes.k8s.webhook_config import WebhookConfig, parse_webhook_config
from custodes.types.json import Json, JsonObject
from k8s_helpers import make_pod

BROKER = "https://broker.bank.example:8443"
CONFIG_TEXT = f"""
[webhook]
confidential_namespaces = "config"
mutate = true

[namespaces.payments]
tenant = "bank"
labels = {{ "custodes.io/confidential" = "true" }}
sealed_secrets = ["sealed-db"]

[namespaces.orphan]
labels = {{ "custodes.io/confidential" = "true" }}

[tenants.bank]
brokers = ["{BROKER}"]
"""


@pytest.fixture
def config() -> WebhookConfig:
    return parse_webhook_config(tomllib.loads(CONFIG_TEXT), Path())


def _review(obj: JsonObject | None, **request: Json) -> JsonObject:
    body: JsonObject = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "payments",
        "operation": "CREATE",
        "object": obj,
    }
    body.update(request)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}


def _good_pod() -> JsonObject:
    pod = make_pod(runtimeClassName="kata-qemu-snp")
    pod["metadata"]["annotations"] = {ANNOTATION_KEY: encode_annotation(broker_initdata(BROKER))}
    return pod


def _decide(
    config: WebhookConfig, obj: JsonObject | None, *, mutate: bool = False, **request: object
) -> JsonObject:
    answer = review(AdmissionRequest.from_json(_review(obj, **request)), config, mutate=mutate)
    out = answer.to_review()
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert out["response"]["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    response: JsonObject = out["response"]
    return response


def test_good_pod_is_allowed(config: WebhookConfig) -> None:
    response = _decide(config, _good_pod())
    assert response == {"uid": response["uid"], "allowed": True}


def test_refusal_names_every_field(config: WebhookConfig) -> None:
    pod = _good_pod()
    del pod["spec"]["runtimeClassName"]
    pod["spec"]["volumes"] = [{"name": "v", "secret": {"secretName": "plain"}}]
    response = _decide(config, pod)
    assert response["allowed"] is False
    status = response["status"]
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert (
        'pod "p" refused in confidential namespace "payments" (tenant "bank")' in status["message"]
    )
    assert "spec.runtimeClassName: missing" in status["message"]
    assert "spec.volumes[0].secret:" in status["message"]
    assert [w.split(":")[0] for w in response["warnings"]] == [
        "spec.runtimeClassName",
        "spec.volumes[0].secret",
    ]


def test_non_confidential_and_unmapped_namespaces(config: WebhookConfig) -> None:
    assert _decide(config, make_pod(), namespace="default")["allowed"] is True
    response = _decide(config, _good_pod(), namespace="orphan")
    assert response["allowed"] is False and "maps it to no tenant" in response["status"]["message"]


def test_namespace_from_the_object_when_the_request_has_none(config: WebhookConfig) -> None:
    pod = make_pod()
    pod["metadata"]["namespace"] = "payments"
    assert _decide(config, pod, namespace="")["allowed"] is False
    response = _decide(config, make_pod(), namespace="")
    assert (
        response["status"]["code"] == 400
        and "namespace is missing" in response["status"]["message"]
    )


@pytest.mark.parametrize(
    ("request_changes", "obj", "needle"),
    [
        (
            {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
            {},
            "not apps/v1 Deployment",
        ),
        ({"kind": {"group": "", "version": "v1", "kind": "Secret"}}, {}, "not core/v1 Secret"),
        ({}, {"apiVersion": "v1", "kind": "Secret"}, "not a v1 Pod"),
        ({}, None, "object is missing"),
    ],
)
def test_unexpected_objects_get_allowed_false_with_reason(
    config: WebhookConfig, request_changes: dict[str, Json], obj: JsonObject | None, needle: str
) -> None:
    response = _decide(config, obj, **request_changes)
    assert response["allowed"] is False
    assert response["status"]["code"] == 400 and response["status"]["reason"] == "BadRequest"
    assert needle in response["status"]["message"]
    assert response["warnings"] == [response["status"]["message"]]


@pytest.mark.parametrize(
    "request_changes",
    [
        {"operation": "DELETE"},
        {"operation": "CONNECT"},
        {"subResource": "status"},
        {"subResource": "binding"},
        {"operation": "UPDATE"},
        {"operation": "UPDATE", "subResource": "status"},
    ],
)
def test_operations_that_cannot_add_a_secret_read_are_allowed(
    config: WebhookConfig, request_changes: dict[str, Json]
) -> None:
    pod = make_pod(volumes=[{"name": "v", "secret": {"secretName": "plain"}}])
    assert _decide(config, pod, **request_changes)["allowed"] is True


def test_ephemeral_containers_are_checked(config: WebhookConfig) -> None:
    pod = _good_pod()
    pod["spec"]["ephemeralContainers"] = [
        {"name": "dbg", "image": "busybox", "envFrom": [{"secretRef": {"name": "plain"}}]}
    ]
    response = _decide(config, pod, operation="UPDATE", subResource="ephemeralcontainers")
    assert response["allowed"] is False
    assert "spec.ephemeralContainers[0].envFrom[0].secretRef" in response["status"]["message"]


def _patch(response: JsonObject) -> list[JsonObject]:
    assert response["patchType"] == "JSONPatch"
    ops: list[JsonObject] = json.loads(base64.b64decode(response["patch"], validate=True))
    return ops


def test_mutation_adds_only_what_is_missing(config: WebhookConfig) -> None:
    pod = make_pod()
    response = _decide(config, pod, mutate=True)
    assert response["allowed"] is True
    ops = _patch(response)
    tenant = config.tenant_of("payments")
    assert tenant is not None
    assert ops == [
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {ANNOTATION_KEY: tenant.annotation},
        },
        {"op": "add", "path": "/spec/runtimeClassName", "value": "kata-qemu-snp"},
    ]
    pod["metadata"]["annotations"] = {"other": "x"}
    ops = _patch(_decide(config, pod, mutate=True))
    assert ops[0] == {
        "op": "add",
        "path": "/metadata/annotations/" + ANNOTATION_KEY,
        "value": tenant.annotation,
    }
    # Nothing missing: no patch. A foreign broker is judged, never overwritten.
    assert "patch" not in _decide(config, _good_pod(), mutate=True)
    foreign = _good_pod()
    foreign["metadata"]["annotations"][ANNOTATION_KEY] = encode_annotation(
        broker_initdata("https://evil.example")
    )
    response = _decide(config, foreign, mutate=True)
    assert (
        response["allowed"] is False and "not a broker of tenant" in response["status"]["message"]
    )


def test_mutation_off_in_config_or_on_update(config: WebhookConfig) -> None:
    ephemeral = _decide(
        config, make_pod(), mutate=True, operation="UPDATE", subResource="ephemeralcontainers"
    )
    assert ephemeral["allowed"] is False and "patch" not in ephemeral
    off = parse_webhook_config(
        tomllib.loads(CONFIG_TEXT.replace("mutate = true", "mutate = false")), Path()
    )
    assert _decide(off, make_pod(), mutate=True)["allowed"] is False
    assert _decide(config, make_pod(), mutate=False)["allowed"] is False


def test_dev_runtime_class_is_allowed_with_a_warning(config: WebhookConfig) -> None:
    pod = _good_pod()
    pod["spec"]["runtimeClassName"] = "kata-qemu-coco-dev"
    response = _decide(config, pod)
    assert response["allowed"] is True and "runs no TEE" in response["warnings"][0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": 1, "a": 2}', "duplicate"),
        (b'{"a": NaN}', "not JSON"),
        (b"[" * 100000 + b"]" * 100000, "nested deeper"),
    ],
)
def test_parse_json_refusals(body: bytes, needle: str) -> None:
    with pytest.raises(AdmissionReviewError, match=needle):
        parse_json(body)


def _mangled(**changes: object) -> JsonObject:
    review_body = _review(make_pod())
    for key, value in changes.items():
        target, _, field = key.partition("__")
        if field:
            if value is None:
                del review_body[target][field]
            else:
                review_body[target][field] = value
        elif value is None:
            del review_body[target]
        else:
            review_body[target] = value
    return review_body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([], "not a JSON object"),
        (_mangled(apiVersion="admission.k8s.io/v1beta1"), "expected apiVersion"),
        (_mangled(kind="Review"), "expected apiVersion"),
        (_mangled(request=None), "no request"),
        (_mangled(request__uid=None), "request.uid"),
        (_mangled(request__uid=""), "request.uid"),
        (_mangled(request__uid=7), "request.uid"),
        (_mangled(request__kind={"kind": "Pod"}), "request.kind"),
        (_mangled(request__operation="PATCH"), "request.operation"),
        (_mangled(request__object=[]), "request.object"),
        (_mangled(request__namespace=3), "request.namespace"),
    ],
)
def test_malformed_reviews(body: object, needle: str) -> None:
    with pytest.raises(AdmissionReviewError, match=needle):
        AdmissionRequest.from_json(body)
    with pytest.raises(AdmissionReviewError, match=needle):
        parse_review(json.dumps(body).encode())
