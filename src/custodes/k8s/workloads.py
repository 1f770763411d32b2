"""Where each workload kind keeps the pod it runs.

A Pod is its own template; Deployment, StatefulSet, DaemonSet, ReplicaSet and Job keep one at
``spec.template``; a CronJob at ``spec.jobTemplate.spec.template``. A ``v1`` ``List`` holds
objects in ``items``. Paths are dotted field paths as Kubernetes prints them in errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custodes.k8s.errors import ManifestError
from custodes.types.json import JsonObject

# kind -> (apiVersion, path of the pod template); () means the object is the pod.
WORKLOAD_KINDS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "Pod": ("v1", ()),
    "Deployment": ("apps/v1", ("spec", "template")),
    "StatefulSet": ("apps/v1", ("spec", "template")),
    "DaemonSet": ("apps/v1", ("spec", "template")),
    "ReplicaSet": ("apps/v1", ("spec", "template")),
    "Job": ("batch/v1", ("spec", "template")),
    "CronJob": ("batch/v1", ("spec", "jobTemplate", "spec", "template")),
}


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """The pod template inside ``owner``; ``metadata`` and ``spec`` are live references."""

    owner: JsonObject
    path: str  # "" for a Pod, else e.g. "spec.template"
    metadata: JsonObject
    spec: JsonObject

    def field(self, rest: str) -> str:
        """The full field path of ``rest`` (e.g. ``spec.containers[0]``) in the owner."""
        return f"{self.path}.{rest}" if self.path else rest


def describe(obj: JsonObject) -> str:
    """``Kind/name`` for messages (never a value from the object's data)."""
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{obj.get('kind', '?')}/{name if isinstance(name, str) else '?'}"


def is_workload(obj: JsonObject) -> bool:
    return obj.get("kind") in WORKLOAD_KINDS


def _object_at(obj: JsonObject, keys: tuple[str, ...], what: str) -> JsonObject:
    current = obj
    for depth, key in enumerate(keys):
        child = current.get(key)
        if child is None:
            child = {}
            current[key] = child
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ManifestError(f"{what}: {where} is not an object")
        current = child
    return current


def pod_template(obj: JsonObject) -> PodTemplate:
    """The pod template of a workload object (``ManifestError`` for another kind)."""
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        raise ManifestError(f"{describe(obj)}: not a workload kind ({', '.join(WORKLOAD_KINDS)})")
    api_version, path = WORKLOAD_KINDS[kind]
    if obj.get("apiVersion") != api_version:
        raise ManifestError(
            f"{describe(obj)}: apiVersion {obj.get('apiVersion')!r} (expected {api_version!r})"
        )
    what = describe(obj)
    template = _object_at(obj, path, what)
    spec = template.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(f"{what}: {'.'.join((*path, 'spec'))} is missing or not an object")
    metadata = _object_at(template, ("metadata",), what)
    return PodTemplate(owner=obj, path=".".join(path), metadata=metadata, spec=spec)


def flatten(docs: list[JsonObject]) -> list[JsonObject]:
    """The objects of ``docs``, with ``v1`` ``List`` items expanded (references, not copies)."""
    out: list[JsonObject] = []
    for doc in docs:
        if doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
            items = doc.get("items")
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ManifestError("List: items must be a list of objects")
            out.extend(flatten(items))
        else:
            out.append(doc)
    return out
