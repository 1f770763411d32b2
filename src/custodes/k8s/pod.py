"""Making a workload confidential: CoCo runtime class, init-data, and ``custodes run``.

For every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob of a manifest
stream (other objects pass through unchanged), on its pod template:

1. ``spec.runtimeClassName`` becomes the chosen CoCo runtime class;
2. the init-data annotation is set to a document naming the tenant's broker (URL and CA in
   ``aa.toml`` and ``cdh.toml``; the policy selector, if given, in ``aa.toml``) and, if
   given, the Kata agent policy. The host measures it into the TEE, so the broker can tell the
   pod started with exactly this;
3. with ``entrypoint_wrap``, for runtimes that do not run the guest components themselves,
   each container's command becomes ``custodes run --url … [--cacert …] [--policy-selector …]
   [--secret-mount …] -- <original command>``. The broker's CA reaches the container through
   the downward API (an annotation mounted as a file): it is public, and the TLS it anchors is
   not what keeps the secrets confidential (the resource is encrypted to the TEE's key). A
   container whose command comes from the image's ENTRYPOINT cannot be wrapped without knowing
   it, so that is refused unless the caller supplies the command.

Every Secret a workload reads is reported back as a warning: it must hold only sealed values.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from custodes.initdata.encoding import ANNOTATION_KEY, encode_annotation
from custodes.initdata.format import InitData
from custodes.k8s.errors import EntrypointUnknown, ManifestError
from custodes.k8s.guestconfig import broker_initdata
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES, DEV_RUNTIME_CLASSES, secret_reads
from custodes.k8s.schema import DEFAULT_K8S_VERSION, has_schema, validate_object
from custodes.k8s.workloads import PodTemplate, describe, flatten, is_workload, pod_template
from custodes.types.json import JsonObject

DEFAULT_RUNTIME_CLASS: Final = "kata-qemu-snp"
CA_ANNOTATION: Final = "custodes.io/broker-ca"
CA_VOLUME: Final = "custodes-broker-ca"
CA_DIR: Final = "/etc/custodes/broker"
CA_FILE: Final = "ca.pem"
WRAPPED_LISTS: Final = ("initContainers", "containers")


@dataclass(frozen=True, slots=True)
class ConfidentialSettings:
    """What ``custodes k8s pod`` does to each workload."""

    broker_url: str
    runtime_class: str = DEFAULT_RUNTIME_CLASS
    broker_cert: str | None = None
    policy: str | None = None
    # The attestation policy the guest asks the broker for (its attestation.policy_id_map).
    policy_selector: str | None = None
    entrypoint_wrap: bool = False
    # For containers whose manifest has no command (the image's ENTRYPOINT would run).
    command: tuple[str, ...] | None = None
    # Wrap only these containers (None: every container and init container).
    containers: frozenset[str] | None = None
    custodes_bin: str = "custodes"


@dataclass(frozen=True, slots=True)
class ConfidentialResult:
    docs: list[JsonObject]
    init_data: InitData
    warnings: list[str] = field(default_factory=list)


def _wrapper(settings: ConfidentialSettings, secret_mounts: Iterable[str]) -> list[str]:
    argv = [settings.custodes_bin, "run", "--url", settings.broker_url]
    if settings.broker_cert is not None:
        argv += ["--cacert", posixpath.join(CA_DIR, CA_FILE)]
    if settings.policy_selector is not None:
        argv += ["--policy-selector", settings.policy_selector]
    for mount in secret_mounts:
        argv += ["--secret-mount", mount]
    return [*argv, "--"]


def _is_wrapped(command: list[str]) -> bool:
    return (
        len(command) >= 2 and posixpath.basename(command[0]) == "custodes" and command[1] == "run"
    )


def _strings(value: object, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{what} must be a list of strings")
    return list(value)


def _secret_volumes(spec: JsonObject) -> set[str]:
    """Names of the volumes that carry a Secret (whole, or among projected sources)."""
    names: set[str] = set()
    volumes = spec.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        if not isinstance(volume, dict) or not isinstance(volume.get("name"), str):
            continue
        projected = volume.get("projected")
        sources = projected.get("sources") if isinstance(projected, dict) else None
        if "secret" in volume or any(
            isinstance(s, dict) and "secret" in s for s in (sources or [])
        ):
            names.add(volume["name"])
    return names


def _ca_volume() -> JsonObject:
    field_path = f"metadata.annotations['{CA_ANNOTATION}']"
    return {
        "name": CA_VOLUME,
        "downwardAPI": {"items": [{"path": CA_FILE, "fieldRef": {"fieldPath": field_path}}]},
    }


def _add_ca_volume(template: PodTemplate, owner: str) -> None:
    volumes = template.spec.setdefault("volumes", [])
    if not isinstance(volumes, list):
        raise ManifestError(f"{owner}: {template.field('spec.volumes')} is not a list")
    existing = [v for v in volumes if isinstance(v, dict) and v.get("name") == CA_VOLUME]
    if not existing:
        volumes.append(_ca_volume())
    elif existing != [_ca_volume()]:
        raise ManifestError(f"{owner}: a different volume is already named {CA_VOLUME!r}")


def _mount_ca(container: JsonObject, mounts: list[object], where: str, owner: str) -> None:
    if any(isinstance(m, dict) and m.get("name") == CA_VOLUME for m in mounts):
        return
    if any(isinstance(m, dict) and m.get("mountPath") == CA_DIR for m in mounts):
        raise ManifestError(f"{owner}: {where} already mounts something at {CA_DIR}")
    mounts.append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
    container["volumeMounts"] = mounts


def _wrap_container(
    container: JsonObject,
    where: str,
    owner: str,
    settings: ConfidentialSettings,
    secret_volumes: set[str],
) -> None:
    name = container.get("name", "?")
    command = _strings(container.get("command"), f"{owner}: {where}.command")
    if command is not None and _is_wrapped(command):
        return
    if command is None:
        if settings.command is None:
            raise EntrypointUnknown(
                f'{owner}: {where} (container "{name}") has no command, so the image\'s '
                "ENTRYPOINT would run and it is not in the manifest: pass --command with the "
                "command to run under custodes (it replaces ENTRYPOINT; args are kept), or set "
                "command in the manifest"
            )
        command = list(settings.command)
    mounts = container.get("volumeMounts") or []
    if not isinstance(mounts, list):
        raise ManifestError(f"{owner}: {where}.volumeMounts is not a list")
    secret_mounts = [
        m["mountPath"]
        for m in mounts
        if isinstance(m, dict) and m.get("name") in secret_volumes and "mountPath" in m
    ]
    container["command"] = [*_wrapper(settings, secret_mounts), *command]
    if settings.broker_cert is not None:
        _mount_ca(container, mounts, where, owner)


def _confidential(obj: JsonObject, settings: ConfidentialSettings, annotation: str) -> list[str]:
    owner = describe(obj)
    template = pod_template(obj)
    template.spec["runtimeClassName"] = settings.runtime_class
    annotations = template.metadata.setdefault("annotations", {})
    if not isinstance(annotations, dict):
        raise ManifestError(f"{owner}: {template.field('metadata.annotations')} is not an object")
    annotations[ANNOTATION_KEY] = annotation
    if settings.entrypoint_wrap:
        secret_volumes = _secret_volumes(template.spec)
        wrapped = 0
        for list_name in WRAPPED_LISTS:
            containers = template.spec.get(list_name) or []
            if not isinstance(containers, list):
                raise ManifestError(f"{owner}: {template.field('spec.' + list_name)} is not a list")
            for i, container in enumerate(containers):
                if not isinstance(container, dict):
                    raise ManifestError(f"{owner}: {list_name}[{i}] is not an object")
                if (
                    settings.containers is not None
                    and container.get("name") not in settings.containers
                ):
                    continue
                where = template.field(f"spec.{list_name}[{i}]")
                _wrap_container(container, where, owner, settings, secret_volumes)
                wrapped += 1
        if wrapped and settings.broker_cert is not None:
            annotations[CA_ANNOTATION] = settings.broker_cert
            _add_ca_volume(template, owner)
    return [
        f'{owner}: {template.field(read.path)}: {read.how} reads Secret "{read.secret}": it '
        "must hold only sealed values (custodes k8s secret), or the cluster admin can read it"
        for read in secret_reads(template.spec)
    ]


def make_confidential(
    docs: list[JsonObject],
    settings: ConfidentialSettings,
    *,
    validate_version: str | None = DEFAULT_K8S_VERSION,
) -> ConfidentialResult:
    """Confidential copies of ``docs`` (the input is not modified).

    With ``validate_version``, every output object whose kind the Kubernetes schemas know is
    validated against them (strict); custom resources are passed through unvalidated, with a
    warning.
    """
    init_data = broker_initdata(
        settings.broker_url,
        cert=settings.broker_cert,
        policy=settings.policy,
        policy_selector=settings.policy_selector,
    )
    annotation = encode_annotation(init_data)
    out = copy.deepcopy(docs)
    warnings: list[str] = []
    if settings.runtime_class in DEV_RUNTIME_CLASSES:
        warnings.append(f"runtime class {settings.runtime_class!r} runs no TEE (development only)")
    elif settings.runtime_class not in COCO_RUNTIME_CLASSES:
        warnings.append(
            f"runtime class {settings.runtime_class!r} is not one of the known CoCo classes "
            f"({', '.join(COCO_RUNTIME_CLASSES)})"
        )
    workloads = 0
    for obj in flatten(out):
        if is_workload(obj):
            warnings.extend(_confidential(obj, settings, annotation))
            workloads += 1
    if workloads == 0:
        raise ManifestError(
            "the manifest holds no workload (Pod, Deployment, StatefulSet, "
            "DaemonSet, ReplicaSet, Job, CronJob)"
        )
    if validate_version is not None:
        for obj in flatten(out):
            if is_workload(obj) or has_schema(obj, validate_version):
                validate_object(obj, validate_version)
            else:
                warnings.append(
                    f"{describe(obj)}: no Kubernetes {validate_version} schema (a custom "
                    "resource?): passed through unvalidated"
                )
    return ConfidentialResult(docs=out, init_data=init_data, warnings=warnings)
