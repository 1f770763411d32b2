"""Kubernetes RBAC, read from ``kubectl get … -o yaml`` output and evaluated offline.

Owns the RBAC objects (Role, ClusterRole, RoleBinding, ClusterRoleBinding), their subjects,
aggregated ClusterRoles, and the question "does this principal's rule set allow this request".
Matching follows the API server's RBAC authorizer exactly:

* a verb, API group or resource ``*`` matches everything (a resource ``*`` includes every
  subresource); ``*/exec`` matches the ``exec`` subresource of any resource; ``pods`` does not
  match ``pods/exec``;
* ``resourceNames`` empty means every name; otherwise the request must name one of them (so a
  rule with ``resourceNames`` never matches ``create``, nor a ``list`` without a
  ``metadata.name`` field selector); ``*`` is not a wildcard there;
* a RoleBinding applies its rules in its own namespace only, a ClusterRoleBinding everywhere;
  a ServiceAccount subject without a namespace means the binding's namespace;
* members of group ``system:masters`` pass every check without RBAC;
* implicit groups: every authenticated identity is in ``system:authenticated``, a service
  account also in ``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``;
  a User named ``system:serviceaccount:<ns>:<name>`` *is* that service account.

Aggregated ClusterRoles (``aggregationRule.clusterRoleSelectors``) are resolved here, to a
fixed point (``admin`` aggregates ``edit``, which aggregates ``view``), whether or not the
aggregation controller already copied the rules into the dump.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from custodes.k8s.access.inputs import (
    get_labels,
    get_object,
    get_objects,
    get_str,
    get_strings,
    metadata,
)
from custodes.k8s.errors import InventoryError
from custodes.types.json import JsonObject

SubjectKind = Literal["User", "Group", "ServiceAccount"]
SUBJECT_KINDS: Final[tuple[SubjectKind, ...]] = ("User", "Group", "ServiceAccount")
RBAC_GROUP: Final = "rbac.authorization.k8s.io"
MASTERS: Final = "system:masters"
AUTHENTICATED: Final = "system:authenticated"
UNAUTHENTICATED: Final = "system:unauthenticated"
ANONYMOUS: Final = "system:anonymous"
SA_USER_PREFIX: Final = "system:serviceaccount:"
ALL: Final = "*"
RBAC_KINDS: Final = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
_OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


# --- subjects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Subject:
    """A User, Group or ServiceAccount as a binding names it."""

    kind: SubjectKind
    name: str
    namespace: str = ""  # ServiceAccounts only

    @classmethod
    def from_json(cls, obj: JsonObject, binding_namespace: str, where: str) -> Subject:
        kind = get_str(obj, "kind", where, required=True)
        name = get_str(obj, "name", where, required=True)
        namespace = get_str(obj, "namespace", where)
        if kind == "ServiceAccount":
            namespace = namespace or binding_namespace
            if not namespace:
                raise InventoryError(f"{where}: ServiceAccount subject {name!r} has no namespace")
            return cls("ServiceAccount", name, namespace)
        if kind == "User":
            return cls.user(name)
        if kind == "Group":
            return cls("Group", name)
        raise InventoryError(f"{where}: subject kind {kind!r} is not User, Group or ServiceAccount")

    @classmethod
    def user(cls, name: str) -> Subject:
        """A User; the user name of a service account becomes that service account."""
        if name.startswith(SA_USER_PREFIX):
            parts = name[len(SA_USER_PREFIX) :].split(":")
            if len(parts) == 2 and all(parts):
                return cls("ServiceAccount", parts[1], parts[0])
        return cls("User", name)

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Subject:
        return cls("ServiceAccount", name, namespace)

    @property
    def id(self) -> str:
        """``User:alice``, ``Group:sre``, ``ServiceAccount:ns/name``."""
        if self.kind == "ServiceAccount":
            return f"ServiceAccount:{self.namespace}/{self.name}"
        return f"{self.kind}:{self.name}"

    @property
    def username(self) -> str:
        """The user name the API server sees (for ``impersonate users``)."""
        if self.kind == "ServiceAccount":
            return f"{SA_USER_PREFIX}{self.namespace}:{self.name}"
        return self.name

    def groups(self) -> tuple[str, ...]:
        """Every group whose bindings apply to this subject (its own name for a Group)."""
        if self.kind == "Group":
            if self.name in (UNAUTHENTICATED, AUTHENTICATED):
                return (self.name,)
            return (self.name, AUTHENTICATED)
        if self.kind == "ServiceAccount":
            return (
                "system:serviceaccounts",
                f"system:serviceaccounts:{self.namespace}",
                AUTHENTICATED,
            )
        if self.name == ANONYMOUS:
            return (UNAUTHENTICATED,)
        return (AUTHENTICATED,)


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """The attributes of one API request, as the authorizer sees them.

    ``namespace`` is ``""`` for a cluster-scoped resource; ``name`` is ``""`` when the request
    names no object (``create``, a ``list`` without a name field selector)."""

    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def __str__(self) -> str:
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        group = f".{self.group}" if self.group else ""
        where = f" in {self.namespace}" if self.namespace else ""
        name = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {resource}{group}{name}{where}"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule of a Role or ClusterRole."""

    verbs: frozenset[str]
    api_groups: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, obj: JsonObject, where: str) -> PolicyRule:
        verbs = get_strings(obj, "verbs", where)
        if not verbs:
            raise InventoryError(f"{where}: a rule has no verbs")
        return cls(
            verbs=frozenset(verbs),
            api_groups=frozenset(get_strings(obj, "apiGroups", where)),
            resources=frozenset(get_strings(obj, "resources", where)),
            resource_names=frozenset(get_strings(obj, "resourceNames", where)),
            non_resource_urls=frozenset(get_strings(obj, "nonResourceURLs", where)),
        )

    @classmethod
    def of(
        cls,
        verbs: Iterable[str],
        resources: Iterable[str],
        groups: Iterable[str] = ("",),
        names: Iterable[str] = (),
    ) -> PolicyRule:
        return cls(frozenset(verbs), frozenset(groups), frozenset(resources), frozenset(names))

    def allows(self, request: Request) -> bool:
        if ALL not in self.verbs and request.verb not in self.verbs:
            return False
        if ALL not in self.api_groups and request.group not in self.api_groups:
            return False
        combined = request.resource + (f"/{request.subresource}" if request.subresource else "")
        if not (
            ALL in self.resources
            or combined in self.resources
            or (request.subresource and f"*/{request.subresource}" in self.resources)
        ):
            return False
        return not self.resource_names or request.name in self.resource_names

    def __str__(self) -> str:
        parts = [
            f"verbs={','.join(sorted(self.verbs))}",
            f"resources={','.join(sorted(self.resources))}",
        ]
        if self.api_groups - {""}:
            groups = sorted(g or '""' for g in self.api_groups)
            parts.append(f"apiGroups={','.join(groups)}")
        if self.resource_names:
            parts.append(f"resourceNames={','.join(sorted(self.resource_names))}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A ``metav1.LabelSelector`` as aggregation rules use it."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def from_json(cls, obj: JsonObject, where: str) -> LabelSelector:
        labels = get_labels(obj, "matchLabels", where)
        expressions = []
        for expr in get_objects(obj, "matchExpressions", where):
            key = get_str(expr, "key", where, required=True)
            operator = get_str(expr, "operator", where, required=True)
            if operator not in _OPERATORS:
                raise InventoryError(f"{where}: label selector operator {operator!r} is unknown")
            values = frozenset(get_strings(expr, "values", where))
            expressions.append((key, operator, values))
        return cls(tuple(sorted(labels.items())), tuple(expressions))

    def matches(self, labels: Mapping[str, str]) -> bool:
        # An empty selector matches nothing in aggregation (the controller skips it).
        if not self.match_labels and not self.match_expressions:
            return False
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for key, operator, values in self.match_expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Role:
    """A Role (``namespace`` set) or ClusterRole, its rules already aggregated."""

    kind: Literal["Role", "ClusterRole"]
    name: str
    namespace: str
    rules: tuple[PolicyRule, ...]
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    aggregation: tuple[LabelSelector, ...] | None = None

    @classmethod
    def from_json(cls, obj: JsonObject) -> Role:
        where, namespace, name = metadata(obj)
        kind = obj.get("kind")
        if kind not in ("Role", "ClusterRole"):
            raise InventoryError(f"{where}: not a Role or ClusterRole")
        if kind == "Role" and not namespace:
            raise InventoryError(f"{where}: a Role has no namespace")
        rules = tuple(PolicyRule.from_json(r, where) for r in get_objects(obj, "rules", where))
        aggregation = None
        if kind == "ClusterRole" and obj.get("aggregationRule") is not None:
            rule = get_object(obj, "aggregationRule", where)
            aggregation = tuple(
                LabelSelector.from_json(s, where)
                for s in get_objects(rule, "clusterRoleSelectors", where)
            )
        labels = get_labels(get_object(obj, "metadata", where), "labels", where)
        return cls(
            kind=kind,
            name=name,
            namespace=namespace if kind == "Role" else "",
            rules=rules,
            labels=labels,
            aggregation=aggregation,
        )

    @property
    def ref(self) -> str:
        return (
            f"Role {self.namespace}/{self.name}"
            if self.kind == "Role"
            else f"ClusterRole {self.name}"
        )


@dataclass(frozen=True, slots=True)
class Binding:
    """A RoleBinding (``namespace`` set) or ClusterRoleBinding."""

    kind: Literal["RoleBinding", "ClusterRoleBinding"]
    name: str
    namespace: str
    role_kind: Literal["Role", "ClusterRole"]
    role_name: str
    subjects: tuple[Subject, ...]

    @classmethod
    def from_json(cls, obj: JsonObject) -> Binding:
        where, namespace, name = metadata(obj)
        kind = obj.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            raise InventoryError(f"{where}: not a RoleBinding or ClusterRoleBinding")
        if kind == "RoleBinding" and not namespace:
            raise InventoryError(f"{where}: a RoleBinding has no namespace")
        scope = namespace if kind == "RoleBinding" else ""
        ref = get_object(obj, "roleRef", where)
        role_kind: Literal["Role", "ClusterRole"]
        match get_str(ref, "kind", where, required=True):
            case "ClusterRole":
                role_kind = "ClusterRole"
            case "Role" if kind == "RoleBinding":
                role_kind = "Role"
            case other:
                raise InventoryError(f"{where}: roleRef kind {other!r} is not allowed here")
        subjects = tuple(
            Subject.from_json(s, scope, where) for s in get_objects(obj, "subjects", where)
        )
        return cls(
            kind=kind,
            name=name,
            namespace=scope,
            role_kind=role_kind,
            role_name=get_str(ref, "name", where, required=True),
            subjects=subjects,
        )

    @property
    def ref(self) -> str:
        if self.kind == "RoleBinding":
            return f"RoleBinding {self.namespace}/{self.name}"
        return f"ClusterRoleBinding {self.name}"


@dataclass(frozen=True, slots=True)
class ScopedRule:
    """A rule in force for a principal: in one namespace, or (``""``) cluster-wide."""

    namespace: str
    rule: PolicyRule
    source: str  # "RoleBinding trading/x -> ClusterRole admin"

    def allows(self, request: Request) -> bool:
        if self.namespace and request.namespace != self.namespace:
            return False
        return self.rule.allows(request)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one principal may do through the API: its scoped rules, or everything."""

    rules: tuple[ScopedRule, ...] = ()
    superuser: str = ""  # why RBAC is bypassed ("Group system:masters"), or ""

    def check(self, request: Request) -> str | None:
        """The source that allows ``request``, or None."""
        if self.superuser:
            return self.superuser
        for scoped in self.rules:
            if scoped.allows(request):
                return scoped.source
        return None

    def with_rules(self, extra: Iterable[ScopedRule]) -> Permissions:
        known = set(self.rules)
        added = tuple(r for r in extra if r not in known)
        return Permissions(self.rules + added, self.superuser) if added else self


# --- built-in roles the analysis needs when a dump lacks them ------------------------------

_APPS: Final = ("apps",)
_BATCH: Final = ("batch",)
_WORKLOADS_CORE: Final = ("pods", "replicationcontrollers")
_WORKLOADS_APPS: Final = ("deployments", "replicasets", "statefulsets", "daemonsets")
_WORKLOADS_BATCH: Final = ("jobs", "cronjobs")
_WRITE: Final = ("create", "delete", "deletecollection", "patch", "update")
_READ: Final = ("get", "list", "watch")

# The secrets-relevant part of the default ``admin`` ClusterRole (Kubernetes 1.30+): every
# rule that touches secrets, pods and their exec/attach, workload controllers, service
# account impersonation and tokens, and namespaced RBAC. Used only when the dump has no
# ClusterRole ``admin``; the analysis then says so.
BUILTIN_ADMIN_RULES: Final = (
    PolicyRule.of((*_READ, *_WRITE), ("secrets",)),
    PolicyRule.of((*_READ, *_WRITE), ("pods", "replicationcontrollers", "serviceaccounts")),
    PolicyRule.of(("create", "get"), ("pods/exec", "pods/attach", "pods/portforward")),
    PolicyRule.of(("patch", "update"), ("pods/ephemeralcontainers",)),
    PolicyRule.of(("impersonate",), ("serviceaccounts",)),
    PolicyRule.of(("create",), ("serviceaccounts/token",)),
    PolicyRule.of((*_READ, *_WRITE), _WORKLOADS_APPS, _APPS),
    PolicyRule.of((*_READ, *_WRITE), _WORKLOADS_BATCH, _BATCH),
    PolicyRule.of((*_READ, *_WRITE), ("roles", "rolebindings"), (RBAC_GROUP,)),
)
BUILTIN_CLUSTER_ADMIN_RULES: Final = (PolicyRule.of((ALL,), (ALL,), (ALL,)),)
BUILTIN_CLUSTER_ROLES: Final[Mapping[str, tuple[PolicyRule, ...]]] = MappingProxyType(
    {"cluster-admin": BUILTIN_CLUSTER_ADMIN_RULES, "admin": BUILTIN_ADMIN_RULES}
)


# --- the model ------------------------------------------------------------------------------


def _aggregate(cluster_roles: dict[str, Role]) -> dict[str, Role]:
    """Resolve aggregation rules to a fixed point; the listed rules are kept as well."""
    rules = {name: list(role.rules) for name, role in cluster_roles.items()}
    changed = True
    while changed:
        changed = False
        for name, role in cluster_roles.items():
            if role.aggregation is None:
                continue
            for other_name, other in cluster_roles.items():
                if other_name == name or not any(s.matches(other.labels) for s in role.aggregation):
                    continue
                for rule in rules[other_name]:
                    if rule not in rules[name]:
                        rules[name].append(rule)
                        changed = True
    return {
        name: Role(
            kind=role.kind,
            name=role.name,
            namespace="",
            rules=tuple(rules[name]),
            labels=role.labels,
            aggregation=role.aggregation,
        )
        for name, role in cluster_roles.items()
    }


@dataclass(frozen=True, slots=True)
class RbacModel:
    """Every role and binding of a dump, aggregation resolved."""

    cluster_roles: Mapping[str, Role]
    roles: Mapping[tuple[str, str], Role]  # (namespace, name)
    bindings: tuple[Binding, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_objects(cls, objects: Iterable[JsonObject]) -> RbacModel:
        """Read the RBAC kinds out of ``objects`` (other kinds are ignored)."""
        cluster_roles: dict[str, Role] = {}
        roles: dict[tuple[str, str], Role] = {}
        bindings: list[Binding] = []
        for obj in objects:
            kind = obj.get("kind")
            if kind == "ClusterRole":
                role = Role.from_json(obj)
                cluster_roles[role.name] = role
            elif kind == "Role":
                role = Role.from_json(obj)
                roles[(role.namespace, role.name)] = role
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                bindings.append(Binding.from_json(obj))
        warnings = []
        for binding in bindings:
            known = (
                binding.role_name in cluster_roles
                if binding.role_kind == "ClusterRole"
                else (binding.namespace, binding.role_name) in roles
            )
            if not known and not (
                binding.role_kind == "ClusterRole" and binding.role_name in BUILTIN_CLUSTER_ROLES
            ):
                warnings.append(
                    f"{binding.ref} refers to {binding.role_kind} {binding.role_name!r}, which "
                    "is not in the input: it grants nothing here (dump every role to be sure)"
                )
        return cls(
            cluster_roles=MappingProxyType(_aggregate(cluster_roles)),
            roles=MappingProxyType(roles),
            bindings=tuple(bindings),
            warnings=tuple(warnings),
        )

    def cluster_role_rules(self, name: str) -> tuple[tuple[PolicyRule, ...], bool]:
        """The rules of ClusterRole ``name`` and whether they are the built-in stand-in."""
        role = self.cluster_roles.get(name)
        if role is not None:
            return role.rules, False
        builtin = BUILTIN_CLUSTER_ROLES.get(name)
        return (builtin, True) if builtin is not None else ((), False)

    def role_rules(self, kind: str, name: str, namespace: str) -> tuple[PolicyRule, ...]:
        if kind == "ClusterRole":
            return self.cluster_role_rules(name)[0]
        role = self.roles.get((namespace, name))
        return role.rules if role is not None else ()

    def subjects(self) -> tuple[Subject, ...]:
        """Every subject some binding names, sorted."""
        return tuple(sorted({s for b in self.bindings for s in b.subjects}))

    def _binding_applies(self, binding: Binding, subject: Subject, groups: set[str]) -> bool:
        for bound in binding.subjects:
            if bound == subject or (bound.kind == "Group" and bound.name in groups):
                return True
        return False

    def permissions(self, subject: Subject) -> Permissions:
        """The rules in force for ``subject`` through its own and its implicit groups'
        bindings (including ``system:authenticated``)."""
        groups = set(subject.groups())
        if MASTERS in groups:
            return Permissions(superuser=f"Group {MASTERS} (bypasses RBAC)")
        scoped: list[ScopedRule] = []
        for binding in self.bindings:
            if not self._binding_applies(binding, subject, groups):
                continue
            role_ref = f"{binding.role_kind} {binding.role_name}"
            source = f"{binding.ref} -> {role_ref}"
            for rule in self.role_rules(binding.role_kind, binding.role_name, binding.namespace):
                scoped.append(ScopedRule(binding.namespace, rule, source))
        return Permissions(tuple(scoped))

    def bindable(self, kind: str, name: str, namespace: str, source: str) -> tuple[ScopedRule, ...]:
        """The rules a new binding to ``kind name`` would grant in ``namespace`` (``""``:
        cluster-wide), attributed to ``source``."""
        return tuple(
            ScopedRule(namespace, rule, source) for rule in self.role_rules(kind, name, namespace)
        )
