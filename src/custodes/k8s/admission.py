"""AdmissionReview v1 for Pods: parse the request, decide, answer (with a JSONPatch).

Decision, for a Pod being created or updated (``pods`` or ``pods/ephemeralcontainers``):

1. a review of anything but a v1 Pod is refused (``allowed: false``, code 400) with the reason;
2. only CREATE, and UPDATE of ``pods/ephemeralcontainers``, are checked. Everything else is
   allowed: DELETE, CONNECT, other subresources (``status``, ``binding``), and UPDATE of the
   pod itself, because what the rules look at (containers' env and volumes, the runtime
   class) is immutable once a pod exists and the init-data is read only when its sandbox
   starts. Refusing such updates would only block controllers (finalizers, labels) on pods
   that predate the namespace's label;
3. a namespace that is not confidential is allowed untouched;
4. a confidential namespace with no tenant in the configuration refuses every pod;
5. when mutating (``/mutate`` and ``mutate = true``, on CREATE), a missing runtime class and a
   missing init-data annotation are added by JSONPatch (the tenant's first broker, its CA and
   policy); what the pod already says is never overwritten, only judged;
6. the (patched) pod is checked by :func:`custodes.k8s.podcheck.check_pod`; every violation
   is named with its field path in ``status.message`` and as one warning each.

A body that is not an AdmissionReview v1 at all (not JSON, wrong apiVersion or kind, no
``request.uid``) cannot be answered as a review: :class:`AdmissionReviewError` (HTTP 400).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Final, NoReturn

from custodes._internal import strictjson
from custodes._internal.b64 import b64std_encode
from custodes.initdata.encoding import ANNOTATION_KEY
from custodes.k8s.errors import AdmissionReviewError
from custodes.k8s.podcheck import check_pod, pod_warnings
from custodes.k8s.webhook_config import WebhookConfig
from custodes.types.json import Json, JsonObject

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"
OPERATIONS: Final = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
# (operation, subresource) pairs that can make a pod read a Secret or choose its broker.
CHECKED: Final = frozenset({("CREATE", ""), ("UPDATE", "ephemeralcontainers")})
MAX_UID_LENGTH: Final = 256
# A pod with its managedFields nests about 20 deep; CRD-heavy objects more. Far above that,
# and still bounded (the reader counts brackets without recursing).
MAX_JSON_DEPTH: Final = 256
# The API server shows warnings to the user; it may cut longer ones.
MAX_WARNING_CHARS: Final = 256


def _fail(msg: str) -> NoReturn:
    raise AdmissionReviewError(msg)


def parse_json(body: bytes) -> Json:
    """Strict JSON (:mod:`custodes._internal.strictjson`), nested at most
    :data:`MAX_JSON_DEPTH` deep."""
    return strictjson.loads(
        body,
        max_depth=MAX_JSON_DEPTH,
        error=lambda why: AdmissionReviewError(f"body is not JSON: {why}"),
    )


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.version} {self.kind}"


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The fields of ``request`` the webhook uses, checked."""

    uid: str
    kind: GroupVersionKind
    operation: str
    namespace: str
    sub_resource: str
    object: JsonObject | None
    name: str

    @classmethod
    def from_json(cls, review: Json) -> AdmissionRequest:
        if not isinstance(review, dict):
            _fail("body is not a JSON object")
        if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
            _fail(
                f"expected apiVersion {API_VERSION!r} and kind {KIND!r}, got "
                f"{review.get('apiVersion')!r} and {review.get('kind')!r}"
            )
        request = review.get("request")
        if not isinstance(request, dict):
            _fail("AdmissionReview has no request object")
        uid = request.get("uid")
        if not isinstance(uid, str) or not uid or len(uid) > MAX_UID_LENGTH:
            _fail("request.uid is missing or not a non-empty string")
        kind = request.get("kind")
        if not isinstance(kind, dict) or not all(
            isinstance(kind.get(k), str) for k in ("group", "version", "kind")
        ):
            _fail("request.kind must be an object with string group, version and kind")
        operation = request.get("operation")
        if operation not in OPERATIONS:
            _fail(f"request.operation must be one of {', '.join(sorted(OPERATIONS))}")
        obj = request.get("object")
        if obj is not None and not isinstance(obj, dict):
            _fail("request.object is not an object")
        namespace = request.get("namespace", "")
        sub_resource = request.get("subResource", "")
        name = request.get("name", "")
        for field, value in (
            ("namespace", namespace),
            ("subResource", sub_resource),
            ("name", name),
        ):
            if not isinstance(value, str):
                _fail(f"request.{field} is not a string")
        return cls(
            uid=uid,
            kind=GroupVersionKind(kind["group"], kind["version"], kind["kind"]),
            operation=operation,
            namespace=namespace,
            sub_resource=sub_resource,
            object=obj,
            name=name,
        )


@dataclass(frozen=True, slots=True)
class AdmissionResponse:
    uid: str
    allowed: bool
    code: int = 200
    reason: str = ""
    message: str = ""
    warnings: tuple[str, ...] = ()
    patch: tuple[JsonObject, ...] = ()

    def to_review(self) -> JsonObject:
        response: JsonObject = {"uid": self.uid, "allowed": self.allowed}
        if not self.allowed:
            response["status"] = {
                "code": self.code,
                "reason": self.reason,
                "message": self.message,
            }
        if self.warnings:
            response["warnings"] = list(self.warnings)
        if self.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = b64std_encode(json.dumps(list(self.patch)).encode("utf-8"))
        return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def parse_review(body: bytes) -> AdmissionRequest:
    return AdmissionRequest.from_json(parse_json(body))


def _pointer(*segments: str) -> str:
    """An RFC 6901 JSON pointer."""
    return "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in segments)


def _warning(text: str) -> str:
    return text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 1] + "…"


def _refuse(uid: str, code: int, message: str, warnings: tuple[str, ...] = ()) -> AdmissionResponse:
    reason = "BadRequest" if code == 400 else "Forbidden"
    return AdmissionResponse(
        uid=uid,
        allowed=False,
        code=code,
        reason=reason,
        message=message,
        warnings=warnings or (_warning(message),),
    )


def _injections(
    pod: JsonObject, config: WebhookConfig, namespace: str
) -> tuple[JsonObject, tuple[JsonObject, ...]]:
    """The pod with what is missing added, and the JSONPatch ("add" ops only) that adds it."""
    tenant = config.tenant_of(namespace)
    patched = copy.deepcopy(pod)
    ops: list[JsonObject] = []
    metadata = patched.get("metadata")
    if tenant is not None and isinstance(metadata, dict):
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict):
            metadata["annotations"] = {ANNOTATION_KEY: tenant.annotation}
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("metadata", "annotations"),
                    "value": {ANNOTATION_KEY: tenant.annotation},
                }
            )
        elif ANNOTATION_KEY not in annotations:
            annotations[ANNOTATION_KEY] = tenant.annotation
            ops.append(
                {
                    "op": "add",
                    "path": _pointer("metadata", "annotations", ANNOTATION_KEY),
                    "value": tenant.annotation,
                }
            )
    spec = patched.get("spec")
    if isinstance(spec, dict) and not spec.get("runtimeClassName"):
        runtime_class = config.runtime_class_for(namespace)
        spec["runtimeClassName"] = runtime_class
        ops.append(
            {"op": "add", "path": _pointer("spec", "runtimeClassName"), "value": runtime_class}
        )
    return patched, tuple(ops)


def review(request: AdmissionRequest, config: WebhookConfig, *, mutate: bool) -> AdmissionResponse:
    """The webhook's answer to one request (``mutate``: the ``/mutate`` endpoint)."""
    uid = request.uid
    if (request.kind.group, request.kind.version, request.kind.kind) != ("", "v1", "Pod"):
        return _refuse(uid, 400, f"this webhook reviews v1 Pods, not {request.kind}")
    if (request.operation, request.sub_resource) not in CHECKED:
        return AdmissionResponse(uid=uid, allowed=True)
    pod = request.object
    if pod is None:
        return _refuse(uid, 400, f"request.object is missing for {request.operation}")
    if pod.get("kind", "Pod") != "Pod" or pod.get("apiVersion", "v1") != "v1":
        return _refuse(
            uid, 400, f"request.object is a {pod.get('apiVersion')} {pod.get('kind')}, not a v1 Pod"
        )
    metadata = pod.get("metadata")
    namespace = request.namespace or (
        metadata.get("namespace", "") if isinstance(metadata, dict) else ""
    )
    if not isinstance(namespace, str) or not namespace:
        return _refuse(uid, 400, "request.namespace is missing: a Pod is namespaced")
    if not config.is_confidential(namespace):
        return AdmissionResponse(uid=uid, allowed=True)
    name = _pod_name(pod, request.name)
    rules = config.rules_for(namespace)
    if rules is None:
        return _refuse(
            uid,
            403,
            f'pod {name} refused: namespace "{namespace}" is confidential but the webhook '
            f"configuration maps it to no tenant ([namespaces.{namespace}] tenant = ...)",
        )
    patch: tuple[JsonObject, ...] = ()
    if mutate and config.mutate and request.operation == "CREATE" and not request.sub_resource:
        pod, patch = _injections(pod, config, namespace)
    violations = check_pod(pod, rules)
    if violations:
        message = (
            f'pod {name} refused in confidential namespace "{namespace}" (tenant '
            f'"{rules.tenant}"): ' + "; ".join(str(v) for v in violations)
        )
        return _refuse(uid, 403, message, tuple(_warning(str(v)) for v in violations))
    warnings = tuple(_warning(w) for w in pod_warnings(pod))
    return AdmissionResponse(uid=uid, allowed=True, warnings=warnings, patch=patch)


def _pod_name(pod: JsonObject, fallback: str) -> str:
    metadata = pod.get("metadata")
    if isinstance(metadata, dict):
        if isinstance(metadata.get("name"), str) and metadata["name"]:
            return f'"{metadata["name"]}"'
        if isinstance(metadata.get("generateName"), str) and metadata["generateName"]:
            return f'"{metadata["generateName"]}*"'
    return f'"{fallback}"' if fallback else "(unnamed)"
