"""The rules a pod in a confidential namespace must follow, each failure with its field path.

1. ``spec.runtimeClassName`` is a Confidential Containers runtime class;
2. every Secret the pod reads (env ``valueFrom.secretKeyRef``, ``envFrom.secretRef``,
   ``volumes.secret``, ``volumes.projected.sources.secret``) is allow-listed as sealed-only:
   a plain Secret would hand its value to whoever can read the pod's Secrets, the node or etcd;
3. the init-data annotation is present, decodes, and points the guest only at brokers of the
   namespace's tenant (``aa.toml`` ``token_configs.kbs.url``, ``cdh.toml`` ``kbc.url``), with
   the data hub on ``cc_kbc``.

Paths follow Kubernetes' own error messages: ``spec.containers[0].env[1].valueFrom.secretKeyRef``,
``metadata.annotations[io.katacontainers.config.hypervisor.cc_init_data]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from custodes.errors import ConfigError, CustodesError
from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.k8s.guestconfig import KBC_NAME, brokers_in, normalize_url
from custodes.types.json import JsonObject

COCO_RUNTIME_CLASSES: Final = (
    "kata-cc",
    "kata-qemu-snp",
    "kata-qemu-tdx",
    "kata-qemu-coco-dev",
    "kata-remote",
)
# Runs the CoCo stack without a TEE: nothing is confidential. Allowed, with a warning.
DEV_RUNTIME_CLASSES: Final = frozenset({"kata-qemu-coco-dev"})
CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True, slots=True)
class Violation:
    """A field of the pod and why it is refused."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class SecretRead:
    """One place where a pod reads a Secret."""

    path: str
    secret: str
    how: str  # e.g. 'variable "DB" of container "app"'


@dataclass(frozen=True, slots=True)
class PodRules:
    """What a confidential namespace requires; ``brokers`` are normalized URLs."""

    tenant: str
    brokers: frozenset[str]
    runtime_classes: frozenset[str] = frozenset(COCO_RUNTIME_CLASSES)
    sealed_secrets: frozenset[str] = field(default_factory=frozenset)


def _dicts(value: object) -> Iterator[tuple[int, JsonObject]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield i, item


def _name(obj: object, key: str = "name") -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


def secret_reads(spec: JsonObject, prefix: str = "spec") -> list[SecretRead]:
    """Every Secret reference of a pod spec (``prefix``: the spec's own field path)."""
    reads: list[SecretRead] = []
    for list_name in CONTAINER_LISTS:
        for i, container in _dicts(spec.get(list_name)):
            where = f"{prefix}.{list_name}[{i}]"
            cname = _name(container)
            for j, env in _dicts(container.get("env")):
                value_from = env.get("valueFrom")
                ref = value_from.get("secretKeyRef") if isinstance(value_from, dict) else None
                if isinstance(ref, dict):
                    reads.append(
                        SecretRead(
                            f"{where}.env[{j}].valueFrom.secretKeyRef",
                            _name(ref),
                            f'variable "{_name(env)}" of container "{cname}"',
                        )
                    )
            for j, env_from in _dicts(container.get("envFrom")):
                ref = env_from.get("secretRef")
                if isinstance(ref, dict):
                    reads.append(
                        SecretRead(
                            f"{where}.envFrom[{j}].secretRef",
                            _name(ref),
                            f'all variables of container "{cname}"',
                        )
                    )
    for i, volume in _dicts(spec.get("volumes")):
        where = f"{prefix}.volumes[{i}]"
        vname = _name(volume)
        secret = volume.get("secret")
        if isinstance(secret, dict):
            reads.append(
                SecretRead(f"{where}.secret", _name(secret, "secretName"), f'volume "{vname}"')
            )
        projected = volume.get("projected")
        sources = projected.get("sources") if isinstance(projected, dict) else None
        for j, source in _dicts(sources):
            ref = source.get("secret")
            if isinstance(ref, dict):
                reads.append(
                    SecretRead(
                        f"{where}.projected.sources[{j}].secret",
                        _name(ref),
                        f'projected volume "{vname}"',
                    )
                )
    return reads


def _runtime_class(spec: JsonObject, rules: PodRules) -> list[Violation]:
    path = "spec.runtimeClassName"
    allowed = ", ".join(sorted(rules.runtime_classes))
    value = spec.get("runtimeClassName")
    if value is None or value == "":
        return [
            Violation(path, f"missing: a confidential pod needs a CoCo runtime class ({allowed})")
        ]
    if value not in rules.runtime_classes:
        return [Violation(path, f"{value!r} is not a CoCo runtime class ({allowed})")]
    return []


def _secrets(spec: JsonObject, rules: PodRules) -> list[Violation]:
    return [
        Violation(
            read.path,
            f'{read.how} reads Secret "{read.secret}", which is not allow-listed as sealed-only '
            "(plain Secrets are readable by the cluster admin)",
        )
        for read in secret_reads(spec)
        if read.secret not in rules.sealed_secrets
    ]


def annotation_path() -> str:
    return f"metadata.annotations[{ANNOTATION_KEY}]"


def _init_data(metadata: JsonObject, rules: PodRules) -> list[Violation]:
    path = annotation_path()
    annotations = metadata.get("annotations")
    value = annotations.get(ANNOTATION_KEY) if isinstance(annotations, dict) else None
    if value is None:
        return [
            Violation(path, f'missing: init-data must name a broker of tenant "{rules.tenant}"')
        ]
    if not isinstance(value, str):
        return [Violation(path, "not a string")]
    try:
        found = brokers_in(decode_annotation(value))
    except CustodesError as e:
        return [Violation(path, f"init-data does not decode: {e}")]
    if not found.refs:
        return [Violation(path, "init-data names no broker (aa.toml token_configs.kbs.url)")]
    out: list[Violation] = []
    allowed = ", ".join(sorted(rules.brokers)) or "none configured"
    for ref in found.refs:
        try:
            normalized = normalize_url(ref.url)
        except ConfigError as e:
            out.append(Violation(path, f"{ref.field}: {e}"))
            continue
        if normalized not in rules.brokers:
            out.append(
                Violation(
                    path,
                    f'{ref.field} "{ref.url}" is not a broker of tenant "{rules.tenant}" '
                    f"(allowed: {allowed})",
                )
            )
    if found.kbc_name is not None and found.kbc_name != KBC_NAME:
        out.append(
            Violation(
                path,
                f'cdh.toml: kbc.name "{found.kbc_name}" is not "{KBC_NAME}" (only cc_kbc '
                "fetches secrets from the tenant's broker)",
            )
        )
    return out


def check_pod(pod: JsonObject, rules: PodRules) -> list[Violation]:
    """Every rule the pod breaks (empty: it may run in the namespace)."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return [Violation("spec", "missing or not an object")]
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return [*_runtime_class(spec, rules), *_secrets(spec, rules), *_init_data(metadata, rules)]


def pod_warnings(pod: JsonObject) -> list[str]:
    """Allowed but worth saying: a runtime class that runs no TEE."""
    spec = pod.get("spec")
    value = spec.get("runtimeClassName") if isinstance(spec, dict) else None
    if value in DEV_RUNTIME_CLASSES:
        return [
            f"spec.runtimeClassName: {value!r} runs no TEE: nothing in this pod is confidential"
        ]
    return []
