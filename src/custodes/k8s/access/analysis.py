"""The access analysis: for every principal and workload secret, every path to its
plaintext and every path that was stopped, and why.

The model and its assumptions are described in :mod:`custodes.k8s.access` and
``docs/access-matrix.md``; :mod:`.capabilities` answers what a principal can do and whom it
can act as; this module decides, per secret, which of those lead to the plaintext (the Secret
through the API, a running pod that holds it, a new pod, the nodes, the broker), and closes
each principal's paths over the principals it can act as.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Final

from custodes.k8s.access.agent_policy import Verdict
from custodes.k8s.access.capabilities import (
    EXEC_VERBS,
    PATCH_VERBS,
    SECRET_VERBS,
    Capabilities,
)
from custodes.k8s.access.inputs import load_files
from custodes.k8s.access.inventory import Inventory, Workload
from custodes.k8s.access.model import (
    CLUSTER_ADMIN_ID,
    INFRA_ADMIN_ID,
    WORKLOAD_ADMIN_PREFIX,
    AccessPath,
    Cell,
    Matrix,
    MatrixOptions,
    Principal,
    WorkloadSecret,
)
from custodes.k8s.access.rbac import Subject
from custodes.k8s.podcheck import DEV_RUNTIME_CLASSES

SYSTEM_NAMESPACES: Final = frozenset({"kube-system", "kube-public", "kube-node-lease"})


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


def _file(
    path: AccessPath,
    absent: str,
    verdict: Verdict | None,
    found: list[AccessPath],
    blocked: list[AccessPath],
) -> None:
    """File a path into a running pod: stopped where the plaintext is not in the pod
    (``absent`` says why; ``""`` when it is) or where the TEE pod's agent policy refuses the
    request (``verdict``), found otherwise."""
    if absent:
        blocked.append(replace(path, blocked=absent))
    elif verdict is not None and not verdict.allowed:
        blocked.append(replace(path, blocked=f"agent policy: {verdict.why}"))
    else:
        found.append(path)


def _workload_namespaces(
    columns: Sequence[WorkloadSecret], options: MatrixOptions
) -> tuple[str, ...]:
    if options.workload_namespaces is not None:
        return tuple(sorted(set(options.workload_namespaces)))
    return tuple(sorted({c.namespace for c in columns if c.namespace not in SYSTEM_NAMESPACES}))


def _principals(inv: Inventory, workload_namespaces: Iterable[str]) -> tuple[Principal, ...]:
    roles = [
        Principal(INFRA_ADMIN_ID, "infrastructure admin", "role"),
        Principal(CLUSTER_ADMIN_ID, "cluster admin", "role"),
    ]
    roles.extend(
        Principal(f"{WORKLOAD_ADMIN_PREFIX}{ns}", f"workload admin ({ns})", "role", None, ns)
        for ns in workload_namespaces
    )
    subjects = set(inv.rbac.subjects())
    subjects.update(Subject.service_account(w.namespace, w.service_account) for w in inv.workloads)
    ordered = sorted(subjects, key=lambda s: (("User", "Group", "ServiceAccount").index(s.kind), s))
    return (*roles, *(Principal(s.id, s.id, s.kind, s) for s in ordered))


class _Analysis:
    """One run of the analysis; caches per principal and column."""

    def __init__(self, inv: Inventory, options: MatrixOptions) -> None:
        self.inv = inv
        self.options = options
        self.columns = _columns(inv, options)
        self.workloads = {w.id: w for w in inv.workloads}
        self.principals = _principals(inv, _workload_namespaces(self.columns, options))
        self.caps = Capabilities(inv, options, self.principals)
        self._direct: dict[tuple[str, str], tuple[list[AccessPath], list[AccessPath]]] = {}

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
        p = self.caps.by_id[pid]
        sealed_reason = "the Secret holds only the sealed value"
        # 1. The Secret object through the API.
        for verb in SECRET_VERBS:
            how = self.caps.can(pid, (verb,), "secrets", "", col.namespace, col.secret)
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
            absent = (
                ""
                if self._plaintext_in(w, col)
                else f"pod {w.id} is not in a TEE: the broker does not release to it"
            )
            policy = w.agent_policy if w.tee else None
            entry = self.caps.exec_into(pid, w) if containers else None
            if entry is not None:
                path = AccessPath(entry[0], f"{entry[1]}: container {containers[0]} of {w.id}")
                _file(path, absent, policy.exec if policy else None, found, blocked)
            stdin = [c for c in containers if c in w.stdin_containers]
            how = (
                self.caps.can(pid, EXEC_VERBS, "pods", "", w.namespace, w.name, "attach")
                if stdin
                else None
            )
            if how:
                path = AccessPath("pods/attach", f"{how}: container {stdin[0]} of {w.id} (stdin)")
                _file(path, absent, policy.stdin if policy else None, found, blocked)
            for resource, sub, via in (
                ("pods", "", "pods/patch"),
                ("pods", "ephemeralcontainers", "pods/ephemeralcontainers"),
            ):
                how = self.caps.can(pid, PATCH_VERBS, resource, "", w.namespace, w.name, sub)
                if how:
                    path = AccessPath(via, f"{how}: run another image or container in {w.id}")
                    _file(path, absent, policy.any_container if policy else None, found, blocked)
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
            creation = self.caps.pod_creation(pid, col.namespace)
            if creation is not None:
                found.append(
                    AccessPath(creation[0], f"{creation[1]}: a new pod mounts {col.secret}")
                )
            return
        if self.options.broker.accepts_sample:
            return  # covered by broker-sample
        loose = [
            (w, policy)
            for w in holders
            if w.tee and (policy := w.agent_policy) is not None and policy.any_container.allowed
        ]
        if loose:
            # Same init-data, own container: the broker sees the measurement it expects.
            namespaces = sorted({*self.inv.namespaces, col.namespace})
            for ns in [col.namespace, *[n for n in namespaces if n != col.namespace]]:
                creation = self.caps.pod_creation(pid, ns)
                if creation is not None:
                    w, policy = loose[0]
                    found.append(
                        AccessPath(
                            creation[0],
                            f"{creation[1]}: a TEE pod with the init-data of {w.id} runs any "
                            f"container ({policy.any_container.why}) and is given the secret",
                        )
                    )
                    return
        creation = self.caps.pod_creation(pid, col.namespace)
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
        node = self.caps.node_access(pid)
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
            if w.tee and w.runtime_class not in DEV_RUNTIME_CLASSES:
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

    def cell(self, pid: str, col: WorkloadSecret) -> Cell:
        found: dict[tuple[str, str], AccessPath] = {}
        blocked: dict[tuple[str, str], AccessPath] = {}
        # Every direct path is kept; through a chain, only the shortest one per path kind
        # (a cluster admin is reachable in many ways, and each would repeat its paths).
        for current, chain in self.caps.reach(pid):
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
    warnings = [*inventory.warnings, *run.caps.warnings]
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
