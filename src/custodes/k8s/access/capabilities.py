"""What each principal can do through the API and on the nodes, and whom it can act as.

A principal's permissions are its RBAC rules (:mod:`.rbac`), grown to a fixed point by what
``bind`` and ``escalate`` let it grant itself. Its capabilities are the steps the access
analysis builds on: getting a pod of its choice into a namespace (pods, controllers, a mutating
webhook), running a command in a running pod (``pods/exec``, ``nodes/proxy``), becoming root
on the nodes (host, a privileged pod), and the "can act as" edges (impersonation,
service-account tokens, a pod running as a service account, node access, a client
certificate for ``system:masters``), closed by :meth:`Capabilities.reach`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

from custodes.k8s.access.inventory import CONTROLLERS, Inventory, Workload
from custodes.k8s.access.model import (
    CLUSTER_ADMIN_ID,
    INFRA_ADMIN_ID,
    MatrixOptions,
    Principal,
    Step,
)
from custodes.k8s.access.rbac import (
    ALL,
    MASTERS,
    RBAC_GROUP,
    Permissions,
    PolicyRule,
    Request,
    ScopedRule,
    Subject,
)

SECRET_VERBS: Final = ("get", "list", "watch", "update", "patch")
EXEC_VERBS: Final = ("create", "get")
PATCH_VERBS: Final = ("patch", "update")
_WEBHOOK_GROUP: Final = "admissionregistration.k8s.io"
_CSR_GROUP: Final = "certificates.k8s.io"
_CLIENT_SIGNERS: Final = ("kubernetes.io/kube-apiserver-client", "kubernetes.io/*")


class Capabilities:
    """One run's answers about each principal, cached: the analysis asks the same few
    questions for every cell."""

    def __init__(
        self, inv: Inventory, options: MatrixOptions, principals: tuple[Principal, ...]
    ) -> None:
        self.inv = inv
        self.options = options
        self.principals = principals
        self.by_id = {p.id: p for p in principals}
        self.warnings: list[str] = []
        self._perms: dict[str, Permissions] = {}
        self._node: dict[str, Step | None] = {}
        self._edges: dict[str, tuple[tuple[str, Step], ...]] = {}
        self._reach: dict[str, tuple[tuple[str, tuple[Step, ...]], ...]] = {}
        self._checks: dict[tuple[str, tuple[str, ...], str, str, str, str, str], str | None] = {}
        self._creation: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._index: dict[str, tuple[bool, frozenset[str], frozenset[str]]] = {}

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
        elif p.subject is not None:
            base = self.inv.rbac.permissions(p.subject)
        else:  # a workload admin: the only role without a fixed id
            rules, builtin = self.inv.rbac.cluster_role_rules("admin")
            if builtin:
                self._warn(
                    "ClusterRole admin is not in the input: the workload admin rows use the "
                    "secrets-relevant part of the Kubernetes default"
                )
            source = f"ClusterRole admin in {p.namespace} (workload admin)"
            base = Permissions(tuple(ScopedRule(p.namespace, r, source) for r in rules))
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
                    self._can(perms, PATCH_VERBS, "clusterroles", RBAC_GROUP, name=name)
                ):
                    extra.append(ScopedRule("", everything, "escalate + update clusterroles"))
                    break
            for ns in namespaces:
                if self._can(perms, ("escalate",), "roles", RBAC_GROUP, ns) and self._can(
                    perms, PATCH_VERBS, "roles", RBAC_GROUP, ns
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

    # --- what it can do ----------------------------------------------------------------

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
                how = self.can(pid, PATCH_VERBS, resource, group, namespace)
                if how:
                    return f"{resource}/patch", f"{how}: rewrite an existing {kind}'s pod template"
        for resource in ("mutatingwebhookconfigurations",):
            how = self.can(pid, ("create", *PATCH_VERBS), resource, _WEBHOOK_GROUP)
            if how:
                return "mutating-webhook", f"{how}: a webhook rewrites every new pod"
        return None

    def exec_into(self, pid: str, w: Workload) -> tuple[str, str] | None:
        """``(via, detail)`` when ``pid`` can run a command in running pod ``w``."""
        how = self.can(pid, EXEC_VERBS, "pods", "", w.namespace, w.name, "exec")
        if how:
            return "pods/exec", how
        how = self.can(pid, EXEC_VERBS, "nodes", "", "", w.node, "proxy")
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
            relabel = None if admits else self.can(pid, PATCH_VERBS, "namespaces", "", ns, ns)
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
            how = self.can(pid, PATCH_VERBS, "pods", "", w.namespace, w.name)
            if how and (policy is None or policy.any_container.allowed):
                return Step(
                    "pods/patch privileged pod",
                    f"{how}: swap the image of {w.id} ({w.privileged})",
                )
        return None

    # --- acting as others --------------------------------------------------------------

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
            pid, PATCH_VERBS, "certificatesigningrequests", _CSR_GROUP, subresource="approval"
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
            how = self.can(pid, SECRET_VERBS[:3], "secrets", "", secret.namespace, secret.name)
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
