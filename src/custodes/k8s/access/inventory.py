"""The inventory of a cluster dump: the workloads, Secrets and namespaces the access analysis
needs, each read once from the untrusted objects into a frozen typed form.

A *workload* is a pod or a controller's pod template (its Secret uses through env, envFrom and
(projected) volumes, whether it runs in a TEE runtime class, its init-data: agent policy and
brokers); a *Secret* is its plain keys and its sealed values (pointers to a broker resource,
never the value). Which runtime classes run in a TEE is the Kubernetes tooling's one list,
:data:`custodes.k8s.podcheck.COCO_RUNTIME_CLASSES`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.initdata.errors import InitDataError
from custodes.initdata.format import AGENT_POLICY, AGENT_POLICY_CLAIMS
from custodes.k8s.access.agent_policy import AgentPolicy
from custodes.k8s.access.inputs import (
    describe,
    get_labels,
    get_list_safe,
    get_object,
    get_objects,
    get_str,
    metadata,
)
from custodes.k8s.access.rbac import RbacModel
from custodes.k8s.errors import InventoryError
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES, DEV_RUNTIME_CLASSES
from custodes.sealed.errors import SealedSecretError
from custodes.sealed.format import PREFIX as SEALED_PREFIX
from custodes.sealed.format import SealedSecret
from custodes.sealed.payload import EnvelopePayload, parse_payload
from custodes.types.json import JsonObject

SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"  # noqa: S105 (a type name)
SA_NAME_ANNOTATION: Final = "kubernetes.io/service-account.name"
PSA_ENFORCE: Final = "pod-security.kubernetes.io/enforce"
# Controllers that create pods: (resource, API group, kind).
CONTROLLERS: Final = (
    ("deployments", "apps", "Deployment"),
    ("replicasets", "apps", "ReplicaSet"),
    ("statefulsets", "apps", "StatefulSet"),
    ("daemonsets", "apps", "DaemonSet"),
    ("jobs", "batch", "Job"),
    ("cronjobs", "batch", "CronJob"),
    ("replicationcontrollers", "", "ReplicationController"),
)
_TEMPLATES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "Deployment": ("spec", "template"),
        "ReplicaSet": ("spec", "template"),
        "StatefulSet": ("spec", "template"),
        "DaemonSet": ("spec", "template"),
        "Job": ("spec", "template"),
        "ReplicationController": ("spec", "template"),
        "CronJob": ("spec", "jobTemplate", "spec", "template"),
    }
)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """One use of a Secret by a container (``container`` ``""``: a pod volume no container
    mounts, which the kubelet still materialises on the node)."""

    secret: str
    keys: frozenset[str] | None  # None: every key
    container: str
    how: Literal["env", "envFrom", "volume"]

    def covers(self, keys: frozenset[str] | None) -> bool:
        """Whether this use reads one of ``keys`` (None: unknown keys, assume yes)."""
        if self.keys is None or keys is None:
            return True
        return bool(self.keys & keys)


@dataclass(frozen=True, slots=True)
class Workload:
    """A pod, or a controller's pod template, and what matters about it here."""

    kind: str
    namespace: str
    name: str
    service_account: str
    automount_token: bool
    runtime_class: str
    tee: bool
    node: str
    privileged: str  # why it gives root on its node, or ""
    stdin_containers: frozenset[str]
    refs: tuple[SecretRef, ...]
    agent_policy: AgentPolicy | None  # TEE pods only
    broker_urls: tuple[str, ...]
    init_data_digest: str
    custodes_run: bool
    owner_kinds: frozenset[str] = frozenset()

    @property
    def running(self) -> bool:
        return self.kind == "Pod"

    @property
    def id(self) -> str:
        if self.kind == "Pod":
            return f"{self.namespace}/{self.name}"
        return f"{self.namespace}/{self.kind}/{self.name}"

    def containers_holding(self, secret: str, keys: frozenset[str] | None) -> tuple[str, ...]:
        """The containers that read one of ``keys`` of ``secret`` (env or mount)."""
        return tuple(
            sorted(
                {
                    r.container
                    for r in self.refs
                    if r.secret == secret and r.container and r.covers(keys)
                }
            )
        )

    def holds(self, secret: str, keys: frozenset[str] | None) -> bool:
        return any(r.secret == secret and r.covers(keys) for r in self.refs)


def _secret_items(source: JsonObject, where: str) -> frozenset[str] | None:
    items = get_objects(source, "items", where)
    if not items:
        return None
    return frozenset(get_str(i, "key", where, required=True) for i in items)


def _pod_refs(spec: JsonObject, where: str) -> tuple[tuple[SecretRef, ...], frozenset[str], str]:
    """The pod's Secret uses, the containers with stdin, and why it is privileged."""
    volumes: dict[str, list[tuple[str, frozenset[str] | None]]] = {}
    privileged = ""
    for volume in get_objects(spec, "volumes", where):
        name = get_str(volume, "name", where, required=True)
        if volume.get("hostPath") is not None:
            privileged = privileged or f"hostPath volume {name!r}"
        uses: list[tuple[str, frozenset[str] | None]] = []
        if volume.get("secret") is not None:
            source = get_object(volume, "secret", where)
            uses.append(
                (get_str(source, "secretName", where, required=True), _secret_items(source, where))
            )
        projected = get_object(volume, "projected", where)
        for src in get_objects(projected, "sources", where):
            if src.get("secret") is not None:
                source = get_object(src, "secret", where)
                uses.append(
                    (get_str(source, "name", where, required=True), _secret_items(source, where))
                )
        if uses:
            volumes[name] = uses
    if spec.get("hostPID") is True:
        privileged = privileged or "hostPID"
    refs: list[SecretRef] = []
    mounted: set[str] = set()
    stdin: set[str] = set()
    containers = [
        *get_objects(spec, "initContainers", where),
        *get_objects(spec, "containers", where),
        *get_objects(spec, "ephemeralContainers", where),
    ]
    for container in containers:
        cname = get_str(container, "name", where, required=True)
        cwhere = f"{where} container {cname}"
        if container.get("stdin") is True:
            stdin.add(cname)
        context = get_object(container, "securityContext", cwhere)
        if context.get("privileged") is True:
            privileged = privileged or f"privileged container {cname!r}"
        for env in get_objects(container, "env", cwhere):
            value_from = get_object(env, "valueFrom", cwhere)
            if value_from.get("secretKeyRef") is not None:
                ref = get_object(value_from, "secretKeyRef", cwhere)
                refs.append(
                    SecretRef(
                        get_str(ref, "name", cwhere, required=True),
                        frozenset({get_str(ref, "key", cwhere, required=True)}),
                        cname,
                        "env",
                    )
                )
        for env_from in get_objects(container, "envFrom", cwhere):
            if env_from.get("secretRef") is not None:
                ref = get_object(env_from, "secretRef", cwhere)
                refs.append(
                    SecretRef(get_str(ref, "name", cwhere, required=True), None, cname, "envFrom")
                )
        for mount in get_objects(container, "volumeMounts", cwhere):
            vname = get_str(mount, "name", cwhere, required=True)
            for secret, keys in volumes.get(vname, ()):
                mounted.add(vname)
                refs.append(SecretRef(secret, keys, cname, "volume"))
    for vname, uses in volumes.items():
        if vname not in mounted:
            refs.extend(SecretRef(secret, keys, "", "volume") for secret, keys in uses)
    return tuple(refs), frozenset(stdin), privileged


def _broker_urls(claims: JsonObject) -> tuple[str, ...]:
    urls: list[str] = []
    cdh = claims.get("cdh.toml")
    if isinstance(cdh, dict) and isinstance(cdh.get("kbc"), dict):
        url = cdh["kbc"].get("url")
        if isinstance(url, str) and url:
            urls.append(url.rstrip("/"))
    aa = claims.get("aa.toml")
    if isinstance(aa, dict) and isinstance(aa.get("token_configs"), dict):
        kbs = aa["token_configs"].get("kbs")
        if isinstance(kbs, dict) and isinstance(kbs.get("url"), str) and kbs["url"]:
            urls.append(kbs["url"].rstrip("/"))
    return tuple(dict.fromkeys(urls))


def _uses_custodes_run(spec: JsonObject) -> bool:
    for container in get_list_safe(spec, "containers"):
        if not isinstance(container, dict):
            continue
        argv = [*get_list_safe(container, "command"), *get_list_safe(container, "args")]
        words = [str(w).rsplit("/", 1)[-1] for w in argv]
        if any(a == "custodes" and b == "run" for a, b in itertools.pairwise(words)):
            return True
    return False


def _workload(
    kind: str,
    namespace: str,
    name: str,
    meta: JsonObject,
    spec: JsonObject,
    tee_classes: frozenset[str],
    where: str,
    warnings: list[str],
) -> Workload:
    refs, stdin, privileged = _pod_refs(spec, where)
    runtime_class = get_str(spec, "runtimeClassName", where)
    tee = runtime_class in tee_classes
    annotations = get_labels(meta, "annotations", where)
    agent_policy: AgentPolicy | None = None
    urls: tuple[str, ...] = ()
    digest = ""
    if tee:
        value = annotations.get(ANNOTATION_KEY)
        if value is None:
            agent_policy = AgentPolicy.unknown(
                "no init-data: the guest image's default agent policy applies and nothing "
                "binds the broker's release to this pod (assumed to allow)"
            )
            warnings.append(f"{where}: TEE pod without init-data ({ANNOTATION_KEY})")
        else:
            try:
                init_data = decode_annotation(value)
                claims = init_data.claims()
            except InitDataError as e:
                agent_policy = AgentPolicy.unknown(f"init-data does not decode ({e.code})")
                warnings.append(f"{where}: init-data annotation does not decode: {e}")
            else:
                digest = init_data.digest.hex()
                urls = _broker_urls(claims)
                policy_text = init_data.data.get(AGENT_POLICY)
                if policy_text is None:
                    agent_policy = AgentPolicy.unknown(
                        "init-data has no policy.rego: the guest image's default agent "
                        "policy applies (assumed to allow)"
                    )
                else:
                    agent_policy = AgentPolicy.from_rego(
                        policy_text, claims.get(AGENT_POLICY_CLAIMS)
                    )
        if runtime_class in DEV_RUNTIME_CLASSES:
            warnings.append(
                f"{where}: runtime class {runtime_class!r} is not a hardware TEE (the host can "
                "read its memory); it is safe only if the broker refuses sample evidence"
            )
    automount = spec.get("automountServiceAccountToken")
    owners = frozenset(
        get_str(o, "kind", where) for o in get_objects(meta, "ownerReferences", where)
    )
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        service_account=get_str(spec, "serviceAccountName", where)
        or get_str(spec, "serviceAccount", where)
        or "default",
        automount_token=automount is not False,
        runtime_class=runtime_class,
        tee=tee,
        node=get_str(spec, "nodeName", where),
        privileged=privileged,
        stdin_containers=stdin,
        refs=refs,
        agent_policy=agent_policy,
        broker_urls=urls,
        init_data_digest=digest,
        custodes_run=_uses_custodes_run(spec),
        owner_kinds=owners - {""},
    )


@dataclass(frozen=True, slots=True)
class SealedValue:
    """A ``sealed.…`` value in a Secret: which broker resource it points to."""

    key: str
    type: str  # "vault" | "envelope" | "unknown"
    resource: str  # the vault resource URI, or the envelope's KEK URI
    kid: str
    signed: bool


@dataclass(frozen=True, slots=True)
class SecretObject:
    namespace: str
    name: str
    type: str
    plain_keys: frozenset[str]
    sealed: tuple[SealedValue, ...]
    service_account: str  # for a legacy service-account token Secret


def _sealed_value(key: str, raw: bytes, where: str, warnings: list[str]) -> SealedValue | None:
    if not raw.startswith(SEALED_PREFIX.encode()):
        return None
    try:
        sealed = SealedSecret.parse(raw.decode("ascii"))
    except (UnicodeDecodeError, SealedSecretError) as e:
        # Conservative: a value that only looks sealed may be a plain secret.
        warnings.append(
            f"{where}: key {key!r} starts with 'sealed.' but does not parse ({e}); "
            "treated as a plain value"
        )
        return None
    try:
        payload = parse_payload(sealed.payload)
    except SealedSecretError as e:
        warnings.append(f"{where}: key {key!r}: sealed payload is invalid ({e.code})")
        return SealedValue(key, "unknown", "", sealed.kid or "", sealed.is_signed)
    if not sealed.is_signed:
        warnings.append(f"{where}: key {key!r} is an unsigned (legacy) sealed secret")
    if isinstance(payload, EnvelopePayload):
        return SealedValue(key, "envelope", payload.key_id, sealed.kid or "", sealed.is_signed)
    return SealedValue(key, "vault", payload.name, sealed.kid or "", sealed.is_signed)


def secret_data_bytes(value: str) -> bytes:
    """A Secret's ``data`` value as Kubernetes reads it: padded standard base64 in which line
    breaks are ignored (Go's decoder skips CR and LF, and ``kubectl kustomize`` wraps long
    values at 76 columns). Anything else that is not base64 is refused."""
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except binascii.Error as e:
        raise ValueError("not padded standard base64") from e


def _secret_object(obj: JsonObject, warnings: list[str]) -> SecretObject:
    where, namespace, name = metadata(obj)
    values: dict[str, bytes] = {}
    for key, value in get_object(obj, "data", where).items():
        if not isinstance(value, str):
            raise InventoryError(f"{where}: data.{key} is not a string")
        try:
            values[key] = secret_data_bytes(value)
        except ValueError as e:
            raise InventoryError(f"{where}: data.{key} is not base64") from e
    for key, value in get_object(obj, "stringData", where).items():
        if not isinstance(value, str):
            raise InventoryError(f"{where}: stringData.{key} is not a string")
        values[key] = value.encode("utf-8")
    sealed: list[SealedValue] = []
    plain: set[str] = set()
    for key, raw in sorted(values.items()):
        value = _sealed_value(key, raw, where, warnings)
        if value is None:
            plain.add(key)
        else:
            sealed.append(value)
    annotations = get_labels(get_object(obj, "metadata", where), "annotations", where)
    secret_type = get_str(obj, "type", where)
    return SecretObject(
        namespace=namespace,
        name=name,
        type=secret_type,
        plain_keys=frozenset(plain),
        sealed=tuple(sealed),
        service_account=annotations.get(SA_NAME_ANNOTATION, "")
        if secret_type == SA_TOKEN_TYPE
        else "",
    )


def _identity(obj: JsonObject) -> tuple[str, str, str, str]:
    raw = obj.get("metadata")
    meta: JsonObject = raw if isinstance(raw, dict) else {}
    api = obj.get("apiVersion")
    group = api.rsplit("/", 1)[0] if isinstance(api, str) and "/" in api else ""
    return (group, str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))


@dataclass(frozen=True, slots=True)
class Inventory:
    """The objects of a cluster dump that the matrix needs."""

    rbac: RbacModel
    workloads: tuple[Workload, ...]
    secrets: Mapping[tuple[str, str], SecretObject]
    pod_security: Mapping[str, str]  # namespace -> enforce level ("" = not enforced)
    namespaces: tuple[str, ...]
    controller_kinds: Mapping[str, frozenset[str]]  # namespace -> kinds present
    warnings: tuple[str, ...]

    @classmethod
    def from_objects(
        cls,
        objects: Iterable[JsonObject],
        tee_runtime_classes: Iterable[str] = COCO_RUNTIME_CLASSES,
    ) -> Inventory:
        tee_classes = frozenset(tee_runtime_classes)
        warnings: list[str] = []
        unique: dict[tuple[str, str, str, str], JsonObject] = {}
        for obj in objects:
            key = _identity(obj)
            if key in unique:
                if unique[key] != obj:
                    warnings.append(
                        f"{describe(obj)} appears twice, differently; the first is used"
                    )
                continue
            unique[key] = obj
        kept = list(unique.values())
        rbac = RbacModel.from_objects(kept)
        workloads: list[Workload] = []
        secrets: dict[tuple[str, str], SecretObject] = {}
        pod_security: dict[str, str] = {}
        namespaces: set[str] = set()
        controllers: dict[str, set[str]] = {}
        for obj in kept:
            kind = obj.get("kind")
            if kind == "Namespace":
                where, _, name = metadata(obj)
                labels = get_labels(get_object(obj, "metadata", where), "labels", where)
                pod_security[name] = labels.get(PSA_ENFORCE, "")
                namespaces.add(name)
                continue
            if not isinstance(kind, str) or kind not in ("Pod", "Secret", *_TEMPLATES):
                continue
            where, namespace, name = metadata(obj)
            if not namespace:
                raise InventoryError(f"{where}: has no namespace")
            namespaces.add(namespace)
            if kind == "Secret":
                secret = _secret_object(obj, warnings)
                secrets[(namespace, name)] = secret
                continue
            meta = get_object(obj, "metadata", where)
            spec = get_object(obj, "spec", where)
            if kind != "Pod":
                controllers.setdefault(namespace, set()).add(kind)
                template: JsonObject = obj
                for step in _TEMPLATES[kind]:
                    template = get_object(template, step, where)
                meta = get_object(template, "metadata", where)
                spec = get_object(template, "spec", where)
            else:
                phase = get_str(get_object(obj, "status", where), "phase", where)
                if phase in ("Succeeded", "Failed"):
                    continue  # finished: holds nothing any more
            workload = _workload(kind, namespace, name, meta, spec, tee_classes, where, warnings)
            workloads.append(workload)
            controllers.setdefault(namespace, set()).update(workload.owner_kinds)
            if "ReplicaSet" in workload.owner_kinds:
                # A ReplicaSet owner is usually a Deployment's; patching that moves the pods.
                controllers[namespace].add("Deployment")
        namespaces.update(ns for b in rbac.bindings if (ns := b.namespace))
        namespaces.update(ns for ns, _ in rbac.roles)
        if not pod_security:
            warnings.append(
                "no Namespace objects in the input: Pod Security levels are unknown, so "
                "privileged pods are assumed to be admitted everywhere (add `namespaces` to "
                "the kubectl command)"
            )
        return cls(
            rbac=rbac,
            workloads=tuple(workloads),
            secrets=MappingProxyType(secrets),
            pod_security=MappingProxyType(pod_security),
            namespaces=tuple(sorted(namespaces)),
            controller_kinds=MappingProxyType(
                {ns: frozenset(kinds) for ns, kinds in controllers.items()}
            ),
            warnings=(*rbac.warnings, *warnings),
        )

    def admits_privileged(self, namespace: str) -> bool:
        """Pod Security lets a privileged pod in (unknown namespaces: assumed yes)."""
        return self.pod_security.get(namespace, "") in ("", "privileged")
