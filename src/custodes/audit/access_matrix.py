"""The access matrix: who can obtain which workload secret in plaintext, and how.

Input is what ``kubectl get clusterroles,clusterrolebindings,roles,rolebindings,pods,secrets
-A -o yaml`` prints (a ``v1`` ``List``; several files and multi-document YAML are accepted;
Namespaces, workload controllers and their pod templates are used when present).

**Columns** are the workload secrets: every Secret a pod (or pod template) reads through
``env``, ``envFrom`` or a (projected) volume, as one *plain* column for its plain keys; and
every ``sealed.…`` value in any Secret's data, as one *sealed* column per key. Sealed values
are custodes (CoCo) sealed secrets: a pointer to a resource that only the broker releases,
and only to an attested TEE.

**Rows** are the three administrative roles of seed ``003`` (infrastructure admin, cluster
admin, one workload admin per workload namespace) and every User, Group and ServiceAccount
that a binding names or a pod runs as.

**Cells**: ``plaintext via <path>`` (every path is kept, the shortest chain first), ``sealed:
TEE only`` (the principal reaches the secret, but only in its sealed form: plaintext exists
only in the broker and inside attested TEEs), or ``no``.

Paths, per principal, then closed over "can act as" edges (impersonation, service-account
tokens, running a pod as a service account, node access, certificate approval):

* ``secrets/get|list|watch|update|patch`` on the Secret (``resourceNames`` honoured; an
  update or patch returns the object, data included);
* ``pods/exec`` (``create`` or ``get``: the websocket upgrade is authorised as ``get``),
  ``pods/attach`` (containers with ``stdin``), ``nodes/proxy`` (the kubelet's exec), into a
  pod whose container holds it; ``pods`` update/patch and ``pods/ephemeralcontainers`` (swap
  the image, add a container);
* creating a pod, or a controller that creates one, in the Secret's namespace (it may mount
  any Secret there); patching an existing controller's template;
* node access (``etcd``, ``node-disk``: the kubelet's volumes and the container spec's env,
  ``node-memory``: a non-TEE pod's memory; for TEE pods the agent API): the infrastructure
  admin has it unless the cluster is a Confidential Cluster; anyone else through a
  privileged pod (where Pod Security admits one), exec into a privileged pod, or
  ``nodes/proxy`` to one. Node access is taken to include a control-plane node (etcd, the
  cluster CA key), i.e. it makes one a cluster admin; this is conservative for managed
  control planes;
* ``broker``: the workload admin stores the sealed secret in their broker.

For a sealed value used by a TEE pod, exec, attach, pod replacement and pod creation yield
the plaintext only where that pod's init-data agent policy lets them (see :class:`AgentPolicy`),
and only under the stated assumption that the broker binds release to the pods' init-data.
Every assumption is listed in :attr:`Matrix.assumptions` and in ``docs/access-matrix.md``.
Secret values are never read beyond the ``sealed.`` prefix and the sealed pointer, and never
printed.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import yaml

from custodes._internal.b64 import b64std_decode
from custodes.audit.rbac import (
    ALL,
    MASTERS,
    RBAC_GROUP,
    InventoryError,
    Permissions,
    PolicyRule,
    RbacModel,
    Request,
    ScopedRule,
    Subject,
    describe,
    get_labels,
    get_list,
    get_object,
    get_objects,
    get_str,
    metadata,
)
from custodes.errors import ConfigError
from custodes.initdata.encoding import ANNOTATION_KEY, decode_annotation
from custodes.initdata.errors import InitDataError
from custodes.initdata.format import AGENT_POLICY, AGENT_POLICY_CLAIMS
from custodes.sealed.errors import SealedSecretError
from custodes.sealed.format import PREFIX as SEALED_PREFIX
from custodes.sealed.format import SealedSecret
from custodes.sealed.payload import EnvelopePayload, parse_payload
from custodes.types.json import JsonObject

TEE_RUNTIME_CLASSES: Final = (
    "kata-cc",
    "kata-qemu-snp",
    "kata-qemu-tdx",
    "kata-qemu-coco-dev",
    "kata-remote",
)
# Listed as CoCo runtime classes, but a plain VM: memory readable by the host.
NO_HARDWARE_TEE: Final = frozenset({"kata-qemu-coco-dev"})
SA_TOKEN_TYPE: Final = "kubernetes.io/service-account-token"  # noqa: S105 (a type name)
SA_NAME_ANNOTATION: Final = "kubernetes.io/service-account.name"
PSA_ENFORCE: Final = "pod-security.kubernetes.io/enforce"
MAX_INPUT_BYTES: Final = 256 * 1024 * 1024
SYSTEM_NAMESPACES: Final = frozenset({"kube-system", "kube-public", "kube-node-lease"})
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
_WEBHOOK_GROUP: Final = "admissionregistration.k8s.io"
_CSR_GROUP: Final = "certificates.k8s.io"
_CLIENT_SIGNERS: Final = ("kubernetes.io/kube-apiserver-client", "kubernetes.io/*")

CLUSTER_ADMIN_ID: Final = "role:cluster-admin"
INFRA_ADMIN_ID: Final = "role:infrastructure-admin"
WORKLOAD_ADMIN_PREFIX: Final = "role:workload-admin:"

Status = Literal["plaintext", "sealed", "no"]


# === input ================================================================================


def _flatten(doc: object, source: str, out: list[JsonObject]) -> None:
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise InventoryError(f"{source}: a document is not a mapping")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InventoryError(f"{source}: an object has no kind")
    if kind == "List" or (kind.endswith("List") and "items" in doc):
        for item in get_list(doc, "items", f"{source}: {kind}"):
            _flatten(item, source, out)
        return
    out.append(doc)


def parse_documents(text: str, source: str = "<input>") -> list[JsonObject]:
    """Every object in a YAML (or JSON) stream: ``List`` items flattened, empty documents
    dropped. ``InventoryError`` for anything that is not YAML or not an object."""
    if len(text) > MAX_INPUT_BYTES:
        raise InventoryError(f"{source}: larger than {MAX_INPUT_BYTES} bytes")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        docs = list(yaml.load_all(text, Loader=loader))  # a SafeLoader (C or Python)
    except yaml.YAMLError as e:
        raise InventoryError(f"{source}: not valid YAML: {e}") from e
    except RecursionError as e:
        raise InventoryError(f"{source}: YAML nested too deeply") from e
    out: list[JsonObject] = []
    for doc in docs:
        _flatten(doc, source, out)
    return out


def load_files(paths: Iterable[Path]) -> list[JsonObject]:
    """The objects of every file, in order."""
    objects: list[JsonObject] = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_INPUT_BYTES:
                raise InventoryError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InventoryError(f"cannot read {path}: {e}") from e
        objects.extend(parse_documents(text, str(path)))
    return objects


# === TEE agent policy =====================================================================


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the agent policy lets one kind of request through, and why we think so."""

    allowed: bool
    why: str


_DEFAULT_RULE = re.compile(
    r"^[ \t]*default[ \t]+(?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*:?=[ \t]*(?P<value>true|false)\b",
    re.MULTILINE,
)


def _has_rule(text: str, name: str) -> bool:
    # A rule head: the name at the start of a line followed by a body, a value or a key.
    pattern = rf"^[ \t]*{re.escape(name)}[ \t]*(?:if\b|\{{|:=|=(?!=)|contains\b|\[)"
    return re.search(pattern, text, re.MULTILINE) is not None


def _default(text: str, name: str) -> str | None:
    value = None
    for match in _DEFAULT_RULE.finditer(text):
        if match.group("name") == name:
            value = match.group("value")
    return value


def _verdict(text: str, name: str, extra: str = "") -> Verdict:
    default = _default(text, name)
    rules = _has_rule(text, name)
    if default == "false" and not rules:
        return Verdict(False, f"default {name} := false and no rule allows it")
    if default == "false":
        return Verdict(
            True,
            f"default {name} := false, but rules allow some requests{extra} "
            "(custodes does not evaluate them: assumed to allow)",
        )
    if default == "true":
        return Verdict(True, f"default {name} := true")
    if rules:
        return Verdict(True, f"{name} has rules but no default (assumed to allow)")
    return Verdict(True, f"the policy does not define {name} (assumed to allow)")


def get_list_safe(obj: Mapping[str, object], key: str) -> list[object]:
    """``obj[key]`` if it is a list, else ``[]`` (for optional, free-form data)."""
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _exec_allow_list(policy_data: object) -> list[str]:
    if not isinstance(policy_data, dict):
        return []
    found: list[object] = []
    found.extend(get_list_safe(policy_data, "allowed_commands"))
    defaults = policy_data.get("request_defaults")
    if isinstance(defaults, dict) and isinstance(defaults.get("ExecProcessRequest"), dict):
        request = defaults["ExecProcessRequest"]
        for key in ("allowed_commands", "commands", "regex"):
            found.extend(get_list_safe(request, key))
    containers = policy_data.get("containers")
    if isinstance(containers, list):
        for container in containers:
            if isinstance(container, dict):
                found.extend(get_list_safe(container, "exec_commands"))
    return [str(c) for c in found]


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """What a TEE pod's Kata agent policy (``policy.rego`` in its init-data) lets the
    untrusted side do. Every verdict's ``allowed`` means "this can expose the plaintext".

    Static reading, conservative: a request counts as forbidden only with ``default <R> :=
    false`` and no rule head for ``<R>``; containers count as pinned with ``default
    CreateContainerRequest := false`` (its rules, e.g. genpolicy's, are taken to allow only
    the workload's own containers). No init-data or no ``policy.rego`` means the guest
    image's default policy, assumed to allow everything."""

    source: str
    exec: Verdict  # ExecProcessRequest: kubectl exec, or the host calling the agent
    stdin: Verdict  # WriteStreamRequest: kubectl attach can drive the process
    set_policy: Verdict  # SetPolicyRequest: the host may replace the policy at run time
    any_container: Verdict  # CreateContainerRequest not pinned: any container may start

    @classmethod
    def unknown(cls, why: str) -> AgentPolicy:
        verdict = Verdict(True, why)
        return cls("none", verdict, verdict, verdict, verdict)

    @classmethod
    def from_rego(cls, text: str, policy_data: object) -> AgentPolicy:
        commands = _exec_allow_list(policy_data)
        extra = f" (allow-listed: {', '.join(commands)})" if commands else ""
        default_create = _default(text, "CreateContainerRequest")
        if default_create == "false":
            any_container = Verdict(
                False,
                "default CreateContainerRequest := false: only the containers its rules "
                "allow may start (assumed to pin the workload's images and commands)",
            )
        else:
            any_container = _verdict(text, "CreateContainerRequest")
        return cls(
            source="init-data policy.rego",
            exec=_verdict(text, "ExecProcessRequest", extra),
            stdin=_verdict(text, "WriteStreamRequest"),
            set_policy=_verdict(text, "SetPolicyRequest"),
            any_container=any_container,
        )

    def host_exec(self) -> Verdict:
        """Exec from the host through the agent API (or after replacing the policy)."""
        if self.exec.allowed:
            return self.exec
        if self.set_policy.allowed:
            return Verdict(True, f"SetPolicyRequest is allowed ({self.set_policy.why})")
        return Verdict(False, f"{self.exec.why}; SetPolicyRequest is forbidden too")


# === inventory ============================================================================


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
        if runtime_class in NO_HARDWARE_TEE:
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


def _secret_object(obj: JsonObject, warnings: list[str]) -> SecretObject:
    where, namespace, name = metadata(obj)
    values: dict[str, bytes] = {}
    for key, value in get_object(obj, "data", where).items():
        if not isinstance(value, str):
            raise InventoryError(f"{where}: data.{key} is not a string")
        try:
            values[key] = b64std_decode(value)
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
        cls, objects: Iterable[JsonObject], tee_runtime_classes: Iterable[str] = TEE_RUNTIME_CLASSES
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
            if kind not in ("Pod", "Secret", *_TEMPLATES):
                continue
            where, namespace, name = metadata(obj)
            if not namespace:
                raise InventoryError(f"{where}: has no namespace")
            namespaces.add(namespace)
            if kind == "Secret":
                secret = _secret_object(obj, warnings)
                secrets[(namespace, name)] = secret
                continue
            assert isinstance(kind, str)  # noqa: S101 (narrowing for mypy)
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


# === options ==============================================================================


@dataclass(frozen=True, slots=True)
class BrokerModel:
    """What is known of the workload admins' broker."""

    url: str = ""  # the broker pods use when their init-data names none
    accepts_sample: bool = False  # the broker accepts sample (non-TEE) evidence
    source: str = ""

    @classmethod
    def from_arg(cls, text: str) -> BrokerModel:
        """``--broker``: a base URL, or the path of a ``custodes serve`` config file."""
        if text.startswith(("http://", "https://")):
            return cls(url=text.rstrip("/"), source=f"--broker {text}")
        from custodes.kbs.config import load_config  # only when a config file is given

        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"--broker {text!r} is neither an http(s) URL nor a config file")
        config = load_config(path)
        scheme = "https" if config.server.tls_cert is not None else "http"
        return cls(
            url=f"{scheme}://{config.server.listen}",
            accepts_sample=config.attestation.unsafe_allow_sample_tee,
            source=f"config {path}",
        )


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    tee_runtime_classes: tuple[str, ...] = TEE_RUNTIME_CLASSES
    # The cluster's nodes and control plane run in confidential VMs (Confidential Clusters):
    # the infrastructure admin reaches nothing inside the cluster.
    confidential_cluster: bool = False
    broker: BrokerModel = field(default_factory=BrokerModel)
    # None: every namespace that holds a workload secret, except kube-system and friends.
    workload_namespaces: tuple[str, ...] | None = None


# === results ==============================================================================


@dataclass(frozen=True, slots=True)
class Step:
    """One "can act as" hop: short for the cell, detail for the report."""

    short: str
    detail: str


@dataclass(frozen=True, slots=True)
class AccessPath:
    """How a principal gets (``blocked`` empty) or fails to get a secret's plaintext."""

    via: str
    detail: str
    chain: tuple[Step, ...] = ()
    blocked: str = ""

    @property
    def label(self) -> str:
        return " -> ".join((*(s.short for s in self.chain), self.via))

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "via": self.via,
            "chain": [{"step": s.short, "detail": s.detail} for s in self.chain],
            "detail": self.detail,
        }
        if self.blocked:
            out["blocked"] = self.blocked
        return out


@dataclass(frozen=True, slots=True)
class Cell:
    status: Status
    paths: tuple[AccessPath, ...] = ()  # plaintext paths, best first
    blocked: tuple[AccessPath, ...] = ()

    @property
    def label(self) -> str:
        if self.status == "plaintext":
            return f"plaintext via {self.paths[0].label}"
        if self.status == "sealed":
            return "sealed: TEE only"
        return "no"


@dataclass(frozen=True, slots=True)
class WorkloadSecret:
    """A column: the plain keys of a Secret, or one sealed value."""

    id: str
    namespace: str
    secret: str
    key: str  # "" for the plain column
    sealed: bool
    keys: frozenset[str] | None  # None: the Secret is not in the input
    resource: str
    brokers: tuple[str, ...]
    holders: tuple[str, ...]  # workload ids

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "secret": self.secret,
            "key": self.key or None,
            "kind": "sealed" if self.sealed else "plain",
            "keys": sorted(self.keys) if self.keys is not None else None,
            "resource": self.resource or None,
            "brokers": list(self.brokers),
            "holders": list(self.holders),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    display: str
    kind: Literal["role", "User", "Group", "ServiceAccount"]
    subject: Subject | None = None
    namespace: str = ""  # a workload admin's namespace

    @property
    def is_role(self) -> bool:
        return self.kind == "role"

    def to_json(self) -> JsonObject:
        return {"id": self.id, "name": self.display, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Matrix:
    principals: tuple[Principal, ...]
    secrets: tuple[WorkloadSecret, ...]
    cells: Mapping[tuple[str, str], Cell]
    workloads: tuple[Workload, ...]
    summary: tuple[str, ...]
    assumptions: tuple[str, ...]
    warnings: tuple[str, ...]

    def cell(self, principal: str, secret: str) -> Cell:
        return self.cells[(principal, secret)]

    def principal(self, pid: str) -> Principal:
        for p in self.principals:
            if p.id == pid:
                return p
        raise KeyError(pid)

    def to_json(self) -> JsonObject:
        return {
            "format": "custodes-access-matrix/1",
            "summary": list(self.summary),
            "principals": [p.to_json() for p in self.principals],
            "secrets": [s.to_json() for s in self.secrets],
            "workloads": [_workload_json(w) for w in self.workloads],
            "cells": [
                {
                    "principal": p.id,
                    "secret": s.id,
                    "status": cell.status,
                    "label": cell.label,
                    "paths": [path.to_json() for path in cell.paths],
                    "blocked": [path.to_json() for path in cell.blocked],
                }
                for p in self.principals
                for s in self.secrets
                for cell in (self.cells[(p.id, s.id)],)
            ],
            "assumptions": list(self.assumptions),
            "warnings": list(self.warnings),
        }


def _workload_json(w: Workload) -> JsonObject:
    policy = w.agent_policy
    return {
        "id": w.id,
        "kind": w.kind,
        "service_account": w.service_account,
        "runtime_class": w.runtime_class or None,
        "tee": w.tee,
        "privileged": w.privileged or None,
        "init_data_digest": w.init_data_digest or None,
        "brokers": list(w.broker_urls),
        "custodes_run": w.custodes_run,
        "agent_policy": None
        if policy is None
        else {
            "source": policy.source,
            "exec": {"allowed": policy.exec.allowed, "why": policy.exec.why},
            "attach": {"allowed": policy.stdin.allowed, "why": policy.stdin.why},
            "set_policy": {"allowed": policy.set_policy.allowed, "why": policy.set_policy.why},
            "any_container": {
                "allowed": policy.any_container.allowed,
                "why": policy.any_container.why,
            },
        },
    }


# === analysis =============================================================================


def _columns(inv: Inventory, options: MatrixOptions) -> tuple[WorkloadSecret, ...]:
    columns: list[WorkloadSecret] = []
    referenced = sorted({(w.namespace, r.secret) for w in inv.workloads for r in w.refs})
    for namespace, name in referenced:
        obj = inv.secrets.get((namespace, name))
        keys = obj.plain_keys if obj is not None else None
        if keys is not None and not keys:
            continue  # sealed values only: their own columns
        holders = tuple(
            w.id for w in inv.workloads if w.namespace == namespace and w.holds(name, keys)
        )
        if not holders:
            continue  # only the sealed keys are used
        columns.append(
            WorkloadSecret(
                id=f"{namespace}/{name}",
                namespace=namespace,
                secret=name,
                key="",
                sealed=False,
                keys=keys,
                resource="",
                brokers=(),
                holders=holders,
            )
        )
    for (namespace, name), obj in sorted(inv.secrets.items()):
        for value in obj.sealed:
            only = frozenset({value.key})
            users = [w for w in inv.workloads if w.namespace == namespace and w.holds(name, only)]
            urls = sorted({u for w in users if w.tee for u in w.broker_urls})
            brokers = tuple(urls) or (options.broker.url or f"(the broker of {namespace})",)
            columns.append(
                WorkloadSecret(
                    id=f"{namespace}/{name}[{value.key}]",
                    namespace=namespace,
                    secret=name,
                    key=value.key,
                    sealed=True,
                    keys=only,
                    resource=value.resource,
                    brokers=brokers,
                    holders=tuple(w.id for w in users),
                )
            )
    return tuple(columns)


_SECRET_VERBS: Final = ("get", "list", "watch", "update", "patch")
_EXEC_VERBS: Final = ("create", "get")
_PATCH_VERBS: Final = ("patch", "update")


class _Analysis:
    """One run of the analysis; caches per principal."""

    def __init__(self, inv: Inventory, options: MatrixOptions) -> None:
        self.inv = inv
        self.options = options
        self.columns = _columns(inv, options)
        self.warnings: list[str] = []
        self.workloads = {w.id: w for w in inv.workloads}
        self.principals = self._principals()
        self.by_id = {p.id: p for p in self.principals}
        self._perms: dict[str, Permissions] = {}
        self._node: dict[str, Step | None] = {}
        self._edges: dict[str, tuple[tuple[str, Step], ...]] = {}
        self._reach: dict[str, tuple[tuple[str, tuple[Step, ...]], ...]] = {}
        self._checks: dict[tuple[str, tuple[str, ...], str, str, str, str, str], str | None] = {}
        self._creation: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._index: dict[str, tuple[bool, frozenset[str], frozenset[str]]] = {}
        self._direct: dict[tuple[str, str], tuple[list[AccessPath], list[AccessPath]]] = {}

    # --- principals ---------------------------------------------------------------------

    def workload_namespaces(self) -> tuple[str, ...]:
        if self.options.workload_namespaces is not None:
            return tuple(sorted(set(self.options.workload_namespaces)))
        return tuple(
            sorted({c.namespace for c in self.columns if c.namespace not in SYSTEM_NAMESPACES})
        )

    def _principals(self) -> tuple[Principal, ...]:
        roles = [
            Principal(INFRA_ADMIN_ID, "infrastructure admin", "role"),
            Principal(CLUSTER_ADMIN_ID, "cluster admin", "role"),
        ]
        roles.extend(
            Principal(f"{WORKLOAD_ADMIN_PREFIX}{ns}", f"workload admin ({ns})", "role", None, ns)
            for ns in self.workload_namespaces()
        )
        subjects = set(self.inv.rbac.subjects())
        subjects.update(
            Subject.service_account(w.namespace, w.service_account) for w in self.inv.workloads
        )
        ordered = sorted(
            subjects, key=lambda s: (("User", "Group", "ServiceAccount").index(s.kind), s)
        )
        return (*roles, *(Principal(s.id, s.id, s.kind, s) for s in ordered))

    # --- permissions --------------------------------------------------------------------

    def perms(self, pid: str) -> Permissions:
        cached = self._perms.get(pid)
        if cached is not None:
            return cached
        p = self.by_id[pid]
        if pid == INFRA_ADMIN_ID:
            base = Permissions()  # no identity in the Kubernetes API
        elif pid == CLUSTER_ADMIN_ID:
            rules, builtin = self.inv.rbac.cluster_role_rules("cluster-admin")
            source = "ClusterRole cluster-admin" + (" (built-in)" if builtin else "")
            base = Permissions(tuple(ScopedRule("", r, source) for r in rules))
        elif p.kind == "role":
            rules, builtin = self.inv.rbac.cluster_role_rules("admin")
            if builtin:
                self._warn(
                    "ClusterRole admin is not in the input: the workload admin rows use the "
                    "secrets-relevant part of the Kubernetes default"
                )
            source = f"ClusterRole admin in {p.namespace} (workload admin)"
            base = Permissions(tuple(ScopedRule(p.namespace, r, source) for r in rules))
        else:
            assert p.subject is not None  # noqa: S101 (every subject principal has one)
            base = self.inv.rbac.permissions(p.subject)
        result = self._escalate(base)
        self._perms[pid] = result
        return result

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _escalate(self, perms: Permissions) -> Permissions:
        """Add what ``bind`` and ``escalate`` let a principal grant itself, to a fixed point."""
        if perms.superuser:
            return perms
        rbac = self.inv.rbac
        namespaces = self.inv.namespaces
        everything = PolicyRule.of((ALL,), (ALL,), (ALL,))
        while True:
            extra: list[ScopedRule] = []
            for name in ("", *rbac.cluster_roles):
                if self._can(perms, ("escalate",), "clusterroles", RBAC_GROUP, name=name) and (
                    self._can(perms, _PATCH_VERBS, "clusterroles", RBAC_GROUP, name=name)
                ):
                    extra.append(ScopedRule("", everything, "escalate + update clusterroles"))
                    break
            for ns in namespaces:
                if self._can(perms, ("escalate",), "roles", RBAC_GROUP, ns) and self._can(
                    perms, _PATCH_VERBS, "roles", RBAC_GROUP, ns
                ):
                    extra.append(ScopedRule(ns, everything, f"escalate + update roles in {ns}"))
            crb = self._can(perms, ("create",), "clusterrolebindings", RBAC_GROUP)
            rb_namespaces = [
                ns
                for ns in namespaces
                if self._can(perms, ("create",), "rolebindings", RBAC_GROUP, ns)
            ]
            # The API server checks `bind` in the new binding's namespace ("" for a
            # ClusterRoleBinding), so a namespaced grant of it counts there.
            for name in rbac.cluster_roles:
                if crb and self._can(perms, ("bind",), "clusterroles", RBAC_GROUP, name=name):
                    extra.extend(
                        rbac.bindable(
                            "ClusterRole", name, "", f"bind ClusterRole {name} (cluster-wide)"
                        )
                    )
                for ns in rb_namespaces:
                    if self._can(perms, ("bind",), "clusterroles", RBAC_GROUP, ns, name):
                        extra.extend(
                            rbac.bindable(
                                "ClusterRole", name, ns, f"bind ClusterRole {name} in {ns}"
                            )
                        )
            for ns, name in rbac.roles:
                if ns in rb_namespaces and self._can(
                    perms, ("bind",), "roles", RBAC_GROUP, ns, name
                ):
                    extra.extend(rbac.bindable("Role", name, ns, f"bind Role {ns}/{name}"))
            grown = perms.with_rules(extra)
            if grown is perms:
                return perms
            perms = grown

    @staticmethod
    def _can(
        perms: Permissions,
        verbs: Sequence[str],
        resource: str,
        group: str = "",
        namespace: str = "",
        name: str = "",
        subresource: str = "",
    ) -> str | None:
        for verb in verbs:
            request = Request(verb, resource, group, subresource, namespace, name)
            source = perms.check(request)
            if source is not None:
                return f"{request} ({source})"
        return None

    def can(
        self,
        pid: str,
        verbs: Sequence[str],
        resource: str,
        group: str = "",
        namespace: str = "",
        name: str = "",
        subresource: str = "",
    ) -> str | None:
        # Most principals mention few resources: answer "no" without a rule scan.
        if not self._may_match(pid, resource, subresource, namespace):
            return None
        key = (pid, tuple(verbs), resource, group, namespace, name, subresource)
        if key not in self._checks:
            perms = self.perms(pid)
            self._checks[key] = self._can(
                perms, verbs, resource, group, namespace, name, subresource
            )
        return self._checks[key]

    def _may_match(self, pid: str, resource: str, subresource: str, namespace: str) -> bool:
        index = self._index.get(pid)
        if index is None:
            perms = self.perms(pid)
            index = (
                bool(perms.superuser),
                frozenset(res for scoped in perms.rules for res in scoped.rule.resources),
                frozenset(scoped.namespace for scoped in perms.rules),
            )
            self._index[pid] = index
        superuser, resources, scopes = index
        if superuser:
            return True
        if "" not in scopes and namespace not in scopes:
            return False
        combined = f"{resource}/{subresource}" if subresource else resource
        return (
            ALL in resources
            or combined in resources
            or (bool(subresource) and f"*/{subresource}" in resources)
        )

    # --- capabilities -------------------------------------------------------------------

    def pod_creation(self, pid: str, namespace: str) -> tuple[str, str] | None:
        """``(via, detail)`` when ``pid`` can get a pod of its choice into ``namespace``."""
        key = (pid, namespace)
        if key not in self._creation:
            self._creation[key] = self._pod_creation(pid, namespace)
        return self._creation[key]

    def _pod_creation(self, pid: str, namespace: str) -> tuple[str, str] | None:
        how = self.can(pid, ("create",), "pods", namespace=namespace)
        if how:
            return "pods/create", how
        for resource, group, _ in CONTROLLERS:
            how = self.can(pid, ("create",), resource, group, namespace)
            if how:
                return f"{resource}/create", how
        present = self.inv.controller_kinds.get(namespace, frozenset())
        for resource, group, kind in CONTROLLERS:
            if kind in present:
                how = self.can(pid, _PATCH_VERBS, resource, group, namespace)
                if how:
                    return f"{resource}/patch", f"{how}: rewrite an existing {kind}'s pod template"
        for resource in ("mutatingwebhookconfigurations",):
            how = self.can(pid, ("create", *_PATCH_VERBS), resource, _WEBHOOK_GROUP)
            if how:
                return "mutating-webhook", f"{how}: a webhook rewrites every new pod"
        return None

    def exec_into(self, pid: str, w: Workload) -> tuple[str, str] | None:
        """``(via, detail)`` when ``pid`` can run a command in running pod ``w``."""
        how = self.can(pid, _EXEC_VERBS, "pods", "", w.namespace, w.name, "exec")
        if how:
            return "pods/exec", how
        how = self.can(pid, _EXEC_VERBS, "nodes", "", "", w.node, "proxy")
        if how:
            return "nodes/proxy", f"{how}: the kubelet's exec endpoint bypasses pods/exec"
        return None

    def node_access(self, pid: str) -> Step | None:
        """How ``pid`` becomes root on the nodes (and so on a control-plane node)."""
        if pid in self._node:
            return self._node[pid]
        self._node[pid] = None  # cycle guard
        step = self._node_access(pid)
        self._node[pid] = step
        return step

    def _node_access(self, pid: str) -> Step | None:
        if pid == INFRA_ADMIN_ID:
            if self.options.confidential_cluster:
                return None
            return Step("host", "root on the hosts, their disks and the hypervisor")
        # Namespaces that admit privileged pods first, then those one could relabel.
        candidates = sorted(
            {*self.inv.namespaces, "kube-system"},
            key=lambda ns: (not self.inv.admits_privileged(ns), ns),
        )
        for ns in candidates:
            admits = self.inv.admits_privileged(ns)
            relabel = None if admits else self.can(pid, _PATCH_VERBS, "namespaces", "", ns, ns)
            if not admits and not relabel:
                continue
            creation = self.pod_creation(pid, ns)
            if creation is None:
                continue
            level = self.inv.pod_security.get(ns)
            why = f"Pod Security {level!r}" if level else "no Pod Security enforced"
            if relabel:
                why = f"relabel the namespace: {relabel}"
            return Step(
                "privileged pod",
                f"{creation[1]}: a privileged pod in {ns} ({why}) is root on its node",
            )
        for w in self.inv.workloads:
            if not (w.running and w.privileged):
                continue
            # In a TEE pod, "privileged" is root in the guest VM; a host path may still be
            # shared into it, so only the agent policy stops this (conservative).
            policy = w.agent_policy if w.tee else None
            entry = self.exec_into(pid, w)
            if entry is not None and (policy is None or policy.exec.allowed):
                return Step(
                    f"{entry[0]} privileged pod",
                    f"{entry[1]}: pod {w.id} ({w.privileged}) is root on its node",
                )
            how = self.can(pid, _PATCH_VERBS, "pods", "", w.namespace, w.name)
            if how and (policy is None or policy.any_container.allowed):
                return Step(
                    "pods/patch privileged pod",
                    f"{how}: swap the image of {w.id} ({w.privileged})",
                )
        return None

    def edges(self, pid: str) -> tuple[tuple[str, Step], ...]:
        cached = self._edges.get(pid)
        if cached is not None:
            return cached
        out: dict[str, Step] = {}

        def add(target: str, step: Step) -> None:
            if target != pid and target in self.by_id and target not in out:
                out[target] = step

        node = self.node_access(pid)
        if node is not None:
            add(
                CLUSTER_ADMIN_ID,
                Step(
                    f"{node.short} -> control plane",
                    f"{node.detail}; root on a control-plane node reads etcd and the cluster "
                    "CA key (self-hosted control plane assumed)",
                ),
            )
            for w in self.inv.workloads:
                if w.running and w.automount_token:
                    sa = Subject.service_account(w.namespace, w.service_account).id
                    add(
                        sa,
                        Step(f"{node.short} -> token", f"{node.detail}; token of {sa} in {w.id}"),
                    )
        how = self.can(pid, ("impersonate",), "groups", name=MASTERS)
        if how:
            add(CLUSTER_ADMIN_ID, Step("impersonate", how))
        csr = self.can(pid, ("create",), "certificatesigningrequests", _CSR_GROUP)
        approve = self.can(
            pid, _PATCH_VERBS, "certificatesigningrequests", _CSR_GROUP, subresource="approval"
        )
        signer = next(
            (
                s
                for name in _CLIENT_SIGNERS
                if (s := self.can(pid, ("approve",), "signers", _CSR_GROUP, name=name))
            ),
            None,
        )
        if csr and approve and signer:
            add(
                CLUSTER_ADMIN_ID,
                Step("certificate", f"{csr}; {approve}; {signer}: a client cert for {MASTERS}"),
            )
        for target in self.principals:
            subject = target.subject
            if subject is None or target.id == pid:
                continue
            how = self._impersonation(pid, subject)
            if how:
                add(target.id, Step("impersonate", how))
            if subject.kind == "ServiceAccount":
                how = self.can(
                    pid,
                    ("create",),
                    "serviceaccounts",
                    "",
                    subject.namespace,
                    subject.name,
                    "token",
                )
                if how:
                    add(target.id, Step("serviceaccounts/token", how))
                creation = self.pod_creation(pid, subject.namespace)
                if creation is not None:
                    add(
                        target.id,
                        Step(
                            f"{creation[0]} as SA", f"{creation[1]}: a pod running as {target.id}"
                        ),
                    )
        for secret in self.inv.secrets.values():
            if not secret.service_account:
                continue
            how = self.can(pid, _SECRET_VERBS[:3], "secrets", "", secret.namespace, secret.name)
            if how:
                sa = Subject.service_account(secret.namespace, secret.service_account).id
                add(sa, Step("secrets/get token", f"{how}: token Secret of {sa}"))
        for w in self.inv.workloads:
            if not (w.running and w.automount_token):
                continue
            if w.tee and w.agent_policy is not None and not w.agent_policy.exec.allowed:
                continue
            entry = self.exec_into(pid, w)
            if entry is not None:
                sa = Subject.service_account(w.namespace, w.service_account).id
                add(sa, Step(f"{entry[0]} token", f"{entry[1]}: the token of {sa} in {w.id}"))
        result = tuple(out.items())
        self._edges[pid] = result
        return result

    def _impersonation(self, pid: str, subject: Subject) -> str | None:
        if subject.kind == "Group":
            return self.can(pid, ("impersonate",), "groups", name=subject.name)
        how = self.can(pid, ("impersonate",), "users", name=subject.username)
        if how or subject.kind != "ServiceAccount":
            return how
        return self.can(
            pid, ("impersonate",), "serviceaccounts", "", subject.namespace, subject.name
        )

    # --- direct paths -------------------------------------------------------------------

    def direct(self, pid: str, col: WorkloadSecret) -> tuple[list[AccessPath], list[AccessPath]]:
        key = (pid, col.id)
        cached = self._direct.get(key)
        if cached is None:
            cached = self._compute_direct(pid, col)
            self._direct[key] = cached
        return cached

    def _plaintext_in(self, w: Workload, col: WorkloadSecret) -> bool:
        """Whether the plaintext exists inside workload ``w``."""
        return not col.sealed or w.tee or self.options.broker.accepts_sample

    def _compute_direct(
        self, pid: str, col: WorkloadSecret
    ) -> tuple[list[AccessPath], list[AccessPath]]:
        found: list[AccessPath] = []
        blocked: list[AccessPath] = []
        p = self.by_id[pid]
        sealed_reason = "the Secret holds only the sealed value"
        # 1. The Secret object through the API.
        for verb in _SECRET_VERBS:
            how = self.can(pid, (verb,), "secrets", "", col.namespace, col.secret)
            if how:
                path = AccessPath(f"secrets/{verb}", how)
                if col.sealed:
                    blocked.append(replace(path, blocked=sealed_reason))
                else:
                    found.append(path)
        holders = [self.workloads[h] for h in col.holders]
        # 2. Into a running pod that holds it.
        for w in holders:
            if not w.running:
                continue
            containers = w.containers_holding(col.secret, col.keys)
            present = self._plaintext_in(w, col)
            absent = f"pod {w.id} is not in a TEE: the broker does not release to it"
            entry = self.exec_into(pid, w) if containers else None
            if entry is not None:
                path = AccessPath(entry[0], f"{entry[1]}: container {containers[0]} of {w.id}")
                if not present:
                    blocked.append(replace(path, blocked=absent))
                elif w.tee and w.agent_policy and not w.agent_policy.exec.allowed:
                    blocked.append(
                        replace(path, blocked=f"agent policy: {w.agent_policy.exec.why}")
                    )
                else:
                    found.append(path)
            stdin = [c for c in containers if c in w.stdin_containers]
            how = (
                self.can(pid, _EXEC_VERBS, "pods", "", w.namespace, w.name, "attach")
                if stdin
                else None
            )
            if how:
                path = AccessPath("pods/attach", f"{how}: container {stdin[0]} of {w.id} (stdin)")
                if not present:
                    blocked.append(replace(path, blocked=absent))
                elif w.tee and w.agent_policy and not w.agent_policy.stdin.allowed:
                    blocked.append(
                        replace(path, blocked=f"agent policy: {w.agent_policy.stdin.why}")
                    )
                else:
                    found.append(path)
            for resource, sub, via in (
                ("pods", "", "pods/patch"),
                ("pods", "ephemeralcontainers", "pods/ephemeralcontainers"),
            ):
                how = self.can(pid, _PATCH_VERBS, resource, "", w.namespace, w.name, sub)
                if not how:
                    continue
                path = AccessPath(via, f"{how}: run another image or container in {w.id}")
                if not present:
                    blocked.append(replace(path, blocked=absent))
                elif w.tee and w.agent_policy and not w.agent_policy.any_container.allowed:
                    blocked.append(
                        replace(path, blocked=f"agent policy: {w.agent_policy.any_container.why}")
                    )
                else:
                    found.append(path)
        # 3. A new pod of one's own.
        self._pod_creation_paths(pid, col, holders, found, blocked)
        # 4. The nodes.
        self._node_paths(pid, col, holders, found, blocked)
        # 5. The broker.
        if col.sealed and p.is_role and p.namespace:
            own = {
                c_broker
                for c in self.columns
                if c.sealed and c.namespace == p.namespace
                for c_broker in c.brokers
            }
            shared = sorted(set(col.brokers) & own)
            if shared:
                where = (
                    "its namespace's broker" if col.namespace == p.namespace else "a shared broker"
                )
                found.append(
                    AccessPath(
                        "broker",
                        f"the workload admin keeps it in {shared[0]} ({where}); resource "
                        f"{col.resource or '(unknown)'}",
                    )
                )
        if col.sealed and self.options.broker.accepts_sample:
            found.append(
                AccessPath(
                    "broker-sample",
                    f"the broker ({self.options.broker.source}) accepts sample evidence: "
                    "anyone who reaches it gets the secret without a TEE",
                )
            )
        return found, blocked

    def _pod_creation_paths(
        self,
        pid: str,
        col: WorkloadSecret,
        holders: list[Workload],
        found: list[AccessPath],
        blocked: list[AccessPath],
    ) -> None:
        if not col.sealed:
            creation = self.pod_creation(pid, col.namespace)
            if creation is not None:
                found.append(
                    AccessPath(creation[0], f"{creation[1]}: a new pod mounts {col.secret}")
                )
            return
        if self.options.broker.accepts_sample:
            return  # covered by broker-sample
        loose = [
            w for w in holders if w.tee and w.agent_policy and w.agent_policy.any_container.allowed
        ]
        if loose:
            # Same init-data, own container: the broker sees the measurement it expects.
            namespaces = sorted({*self.inv.namespaces, col.namespace})
            for ns in [col.namespace, *[n for n in namespaces if n != col.namespace]]:
                creation = self.pod_creation(pid, ns)
                if creation is not None:
                    w = loose[0]
                    policy = w.agent_policy
                    assert policy is not None  # noqa: S101 (filtered above)
                    found.append(
                        AccessPath(
                            creation[0],
                            f"{creation[1]}: a TEE pod with the init-data of {w.id} runs any "
                            f"container ({policy.any_container.why}) and is given the secret",
                        )
                    )
                    return
        creation = self.pod_creation(pid, col.namespace)
        if creation is not None:
            tee = [w for w in holders if w.tee]
            reason = (
                "the broker releases only to a TEE with the workload's init-data, whose agent "
                "policy pins the containers"
                if tee
                else "no TEE pod uses it: the broker releases it to no pod here"
            )
            blocked.append(
                AccessPath(
                    creation[0], f"{creation[1]}: a new pod mounts {col.secret}", blocked=reason
                )
            )

    def _node_paths(
        self,
        pid: str,
        col: WorkloadSecret,
        holders: list[Workload],
        found: list[AccessPath],
        blocked: list[AccessPath],
    ) -> None:
        node = self.node_access(pid)
        if node is None:
            return
        # The infrastructure admin is on the host already; anyone else says how they got there.
        prefix = "" if pid == INFRA_ADMIN_ID else f"{node.detail}; "
        running = [w for w in holders if w.running]
        etcd = AccessPath("etcd", f"{prefix}etcd holds Secret {col.namespace}/{col.secret}")
        if col.sealed:
            blocked.append(replace(etcd, blocked="etcd holds only the sealed value"))
        else:
            found.append(etcd)
        for w in running:
            disk = AccessPath(
                "node-disk",
                f"{prefix}the kubelet's copy for {w.id} on node {w.node or '(unscheduled)'}",
            )
            if col.sealed:
                blocked.append(replace(disk, blocked="the node holds only the sealed value"))
            else:
                found.append(disk)
            memory = AccessPath("node-memory", f"{prefix}memory of {w.id}")
            if w.tee and w.runtime_class not in NO_HARDWARE_TEE:
                if self._plaintext_in(w, col):
                    blocked.append(replace(memory, blocked="TEE memory is encrypted"))
            elif self._plaintext_in(w, col):
                found.append(memory)
            if w.tee and col.sealed and w.agent_policy is not None:
                verdict = w.agent_policy.host_exec()
                agent = AccessPath("node-agent", f"{prefix}the Kata agent API of {w.id}")
                if verdict.allowed:
                    found.append(replace(agent, detail=f"{agent.detail}: {verdict.why}"))
                else:
                    blocked.append(replace(agent, blocked=f"agent policy: {verdict.why}"))
        if col.sealed and not self.options.broker.accepts_sample:
            loose = [
                w
                for w in holders
                if w.tee and w.agent_policy and w.agent_policy.any_container.allowed
            ]
            if loose:
                found.append(
                    AccessPath(
                        "node-tee",
                        f"{prefix}start a TEE with the init-data of {loose[0].id} and any "
                        "container; the broker releases the secret to it",
                    )
                )

    # --- the matrix ---------------------------------------------------------------------

    def reach(self, pid: str) -> tuple[tuple[str, tuple[Step, ...]], ...]:
        """Every principal ``pid`` can act as (itself first), by the shortest chain."""
        cached = self._reach.get(pid)
        if cached is not None:
            return cached
        out: list[tuple[str, tuple[Step, ...]]] = []
        queue: deque[tuple[str, tuple[Step, ...]]] = deque([(pid, ())])
        seen = {pid}
        while queue:
            current, chain = queue.popleft()
            out.append((current, chain))
            for target, step in self.edges(current):
                if target not in seen:
                    seen.add(target)
                    queue.append((target, (*chain, step)))
        result = tuple(out)
        self._reach[pid] = result
        return result

    def cell(self, pid: str, col: WorkloadSecret) -> Cell:
        found: dict[tuple[str, str], AccessPath] = {}
        blocked: dict[tuple[str, str], AccessPath] = {}
        # Every direct path is kept; through a chain, only the shortest one per path kind
        # (a cluster admin is reachable in many ways, and each would repeat its paths).
        for current, chain in self.reach(pid):
            paths, stops = self.direct(current, col)
            for path in paths:
                if not chain or path.via not in {v for v, _ in found}:
                    found.setdefault((path.via, path.detail), replace(path, chain=chain))
            for path in stops:
                if not chain or path.via not in {v for v, _ in blocked}:
                    blocked.setdefault((path.via, path.blocked), replace(path, chain=chain))
        ordered = tuple(sorted(found.values(), key=lambda a: len(a.chain)))
        refused = tuple(sorted(blocked.values(), key=lambda a: len(a.chain)))
        if ordered:
            return Cell("plaintext", ordered, refused)
        if col.sealed and refused:
            return Cell("sealed", (), refused)
        return Cell("no", (), refused)


def _summary(
    principals: Sequence[Principal],
    columns: Sequence[WorkloadSecret],
    cells: Mapping[tuple[str, str], Cell],
) -> tuple[str, ...]:
    lines: list[str] = []
    total = len(columns)
    for p in principals:
        if not p.is_role:
            continue
        plain = [c for c in columns if cells[(p.id, c.id)].status == "plaintext"]
        sealed = [c for c in columns if cells[(p.id, c.id)].status == "sealed"]
        none = [c for c in columns if cells[(p.id, c.id)].status == "no"]
        text = f"{p.display}: can obtain {len(plain)} of {total} workload secrets in plaintext"
        if plain:
            text += ": " + ", ".join(
                f"{c.id} ({cells[(p.id, c.id)].paths[0].label})" for c in plain
            )
        if sealed:
            text += f"; cannot obtain {len(sealed)} (sealed, released only to an attested TEE): "
            text += ", ".join(c.id for c in sealed)
        if none:
            text += f"; no access to {len(none)}: " + ", ".join(c.id for c in none)
        lines.append(text)
    sealed_cols = [c for c in columns if c.sealed]
    if sealed_cols:
        exposed = []
        for c in sealed_cols:
            who = [
                p.display
                for p in principals
                if cells[(p.id, c.id)].status == "plaintext"
                and not (
                    p.is_role
                    and p.namespace
                    and any(a.via == "broker" for a in cells[(p.id, c.id)].paths)
                )
            ]
            if who:
                exposed.append(f"{c.id} (to {', '.join(who)})")
        lines.append(
            f"sealed secrets: {len(sealed_cols)}; exposed in plaintext to anyone but their "
            f"workload admin: {len(exposed)}" + (": " + "; ".join(exposed) if exposed else "")
        )
    subjects = [p for p in principals if not p.is_role]
    reading = [
        p for p in subjects if any(cells[(p.id, c.id)].status == "plaintext" for c in columns)
    ]
    lines.append(
        f"subjects that can obtain at least one workload secret in plaintext: "
        f"{len(reading)} of {len(subjects)}"
    )
    return tuple(lines)


def _assumptions(options: MatrixOptions) -> tuple[str, ...]:
    infra = (
        "infrastructure admin: the cluster's nodes and control plane run in confidential VMs "
        "(Confidential Clusters), so the infrastructure admin reaches nothing inside the cluster"
        if options.confidential_cluster
        else "infrastructure admin: root on every host, its disks (etcd included) and the "
        "hypervisor (memory of every non-TEE VM and process); no Kubernetes or broker identity"
    )
    broker = options.broker
    return (
        infra,
        "cluster admin: a subject bound to ClusterRole cluster-admin; no broker identity",
        "workload admin (<namespace>): ClusterRole admin bound in that namespace, and the "
        "owner of the broker that holds the namespace's sealed secrets",
        "a pod runs in a TEE when its runtimeClassName is one of "
        f"{', '.join(options.tee_runtime_classes)} (the name is taken at face value: attestation, "
        "not the name, decides whether the broker releases a secret)",
        "the broker releases a sealed secret only to a TEE whose evidence matches its policy, "
        "including the init-data digest of the pods that use it",
        "exec and attach into a TEE pod work unless its init-data agent policy forbids "
        "ExecProcessRequest (WriteStreamRequest for attach) by default and has no rule for it; "
        "the host can also replace the policy unless SetPolicyRequest is forbidden",
        "a TEE pod's containers are pinned when its agent policy has "
        "`default CreateContainerRequest := false`; otherwise anyone who can start a TEE with "
        "the same init-data runs their own container and is given the secret",
        "node access (host root, a privileged pod, exec into a privileged pod) includes a "
        "control-plane node: etcd and the cluster CA key",
        "privileged pods are admitted in a namespace unless its Namespace object says "
        "pod-security.kubernetes.io/enforce: baseline or restricted",
        "broker: "
        + (
            f"{broker.source}" + ("; it ACCEPTS SAMPLE EVIDENCE" if broker.accepts_sample else "")
            if broker.source
            else "not given: pods' init-data names it, else one broker per namespace"
        ),
    )


def analyse(inventory: Inventory, options: MatrixOptions | None = None) -> Matrix:
    """The access matrix of ``inventory``."""
    options = options or MatrixOptions()
    run = _Analysis(inventory, options)
    cells = {(p.id, c.id): run.cell(p.id, c) for p in run.principals for c in run.columns}
    warnings = [*inventory.warnings, *run.warnings]
    if options.broker.accepts_sample:
        warnings.append(
            "the broker accepts sample evidence: every sealed secret is available without a TEE"
        )
    return Matrix(
        principals=run.principals,
        secrets=run.columns,
        cells=MappingProxyType(cells),
        workloads=inventory.workloads,
        summary=_summary(run.principals, run.columns, cells),
        assumptions=_assumptions(options),
        warnings=tuple(warnings),
    )


def build_matrix(paths: Iterable[Path], options: MatrixOptions | None = None) -> Matrix:
    """Read cluster dumps and analyse them: the CLI's entry point."""
    options = options or MatrixOptions()
    inventory = Inventory.from_objects(load_files(paths), options.tee_runtime_classes)
    return analyse(inventory, options)
