"""RBAC read from kubectl dumps and evaluated as the API server's authorizer does."""

from __future__ import annotations

from typing import Any

import pytest

from custodes.k8s.access.rbac import (
    BUILTIN_ADMIN_RULES,
    LabelSelector,
    Permissions,
    PolicyRule,
    RbacModel,
    Request,
    Role,
    Subject,
)
from custodes.k8s.errors import InventoryError


def rule(**kw: Any) -> dict[str, Any]:
    return {"apiGroups": [""], **kw}


def cluster_role(name: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if "labels" in extra:
        meta["labels"] = extra.pop("labels")
    return {"kind": "ClusterRole", "metadata": meta, "rules": rules, **extra}


def role(name: str, ns: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "Role", "metadata": {"name": name, "namespace": ns}, "rules": rules}


def binding(
    name: str, role_kind: str, role_name: str, subjects: list[dict[str, Any]], ns: str = ""
) -> dict[str, Any]:
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


USER = {"kind": "User", "name": "alice"}


def perms(objects: list[dict[str, Any]], subject: Subject | None = None) -> Permissions:
    return RbacModel.from_objects(objects).permissions(subject or Subject.user("alice"))


# --- rule matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_", "request_", "allowed"),
    [
        (PolicyRule.of(["get"], ["secrets"]), Request("get", "secrets", name="x"), True),
        (PolicyRule.of(["get"], ["secrets"]), Request("list", "secrets"), False),
        (PolicyRule.of(["*"], ["secrets"]), Request("watch", "secrets"), True),
        (PolicyRule.of(["get"], ["*"]), Request("get", "secrets"), True),
        # A resource "*" includes every subresource.
        (PolicyRule.of(["create"], ["*"]), Request("create", "pods", subresource="exec"), True),
        # "pods" does not include "pods/exec".
        (PolicyRule.of(["create"], ["pods"]), Request("create", "pods", subresource="exec"), False),
        (
            PolicyRule.of(["create"], ["pods/exec"]),
            Request("create", "pods", subresource="exec"),
            True,
        ),
        (
            PolicyRule.of(["create"], ["*/exec"]),
            Request("create", "pods", subresource="exec"),
            True,
        ),
        (PolicyRule.of(["create"], ["*/exec"]), Request("create", "pods"), False),
        (
            PolicyRule.of(["create"], ["*/exec"]),
            Request("create", "pods", subresource="attach"),
            False,
        ),
        # API groups: "" is core; "*" is every group.
        (
            PolicyRule.of(["create"], ["deployments"]),
            Request("create", "deployments", "apps"),
            False,
        ),
        (
            PolicyRule.of(["create"], ["deployments"], ["apps"]),
            Request("create", "deployments", "apps"),
            True,
        ),
        (
            PolicyRule.of(["create"], ["deployments"], ["*"]),
            Request("create", "deployments", "apps"),
            True,
        ),
        # resourceNames: the request must name one of them; "*" is not a wildcard there.
        (
            PolicyRule.of(["get"], ["secrets"], names=["a"]),
            Request("get", "secrets", name="a"),
            True,
        ),
        (
            PolicyRule.of(["get"], ["secrets"], names=["a"]),
            Request("get", "secrets", name="b"),
            False,
        ),
        (PolicyRule.of(["list"], ["secrets"], names=["a"]), Request("list", "secrets"), False),
        (PolicyRule.of(["create"], ["pods"], names=["a"]), Request("create", "pods"), False),
        (
            PolicyRule.of(["get"], ["secrets"], names=["*"]),
            Request("get", "secrets", name="a"),
            False,
        ),
    ],
)
def test_rule_matching(rule_: PolicyRule, request_: Request, allowed: bool) -> None:
    assert rule_.allows(request_) is allowed


def test_rolebinding_applies_in_its_namespace_only() -> None:
    p = perms(
        [
            cluster_role("reader", [rule(resources=["secrets"], verbs=["get"])]),
            binding("b", "ClusterRole", "reader", [USER], ns="team"),
        ]
    )
    assert p.check(Request("get", "secrets", namespace="team", name="x")) is not None
    assert p.check(Request("get", "secrets", namespace="other", name="x")) is None
    # A namespaced grant never covers a cluster-scoped request.
    assert p.check(Request("get", "secrets")) is None


def test_clusterrolebinding_applies_everywhere() -> None:
    p = perms(
        [
            cluster_role("reader", [rule(resources=["secrets"], verbs=["get"])]),
            binding("b", "ClusterRole", "reader", [USER]),
        ]
    )
    source = p.check(Request("get", "secrets", namespace="any", name="x"))
    assert source == "ClusterRoleBinding b -> ClusterRole reader"


def test_role_binding_to_a_role() -> None:
    p = perms(
        [
            role("r", "team", [rule(resources=["pods/exec"], verbs=["create"])]),
            binding("b", "Role", "r", [USER], ns="team"),
        ]
    )
    assert p.check(Request("create", "pods", "", "exec", "team", "p")) is not None
    assert p.check(Request("create", "pods", "", "exec", "other", "p")) is None


def test_rule_str_names_its_parts() -> None:
    text = str(PolicyRule.of(["get"], ["deployments"], ["apps", ""], ["d"]))
    assert "verbs=get" in text and 'apiGroups="",apps' in text and "resourceNames=d" in text


# --- subjects -----------------------------------------------------------------------------


def test_service_account_subject_defaults_to_the_binding_namespace() -> None:
    model = RbacModel.from_objects(
        [
            role("r", "team", [rule(resources=["secrets"], verbs=["get"])]),
            binding("b", "Role", "r", [{"kind": "ServiceAccount", "name": "app"}], ns="team"),
        ]
    )
    assert model.subjects() == (Subject.service_account("team", "app"),)
    assert model.permissions(Subject.service_account("team", "app")).check(
        Request("get", "secrets", namespace="team", name="s")
    )


def test_service_account_in_a_clusterrolebinding_needs_a_namespace() -> None:
    obj = binding("b", "ClusterRole", "x", [{"kind": "ServiceAccount", "name": "app"}])
    with pytest.raises(InventoryError):
        RbacModel.from_objects([obj])


def test_user_named_like_a_service_account_is_that_service_account() -> None:
    assert Subject.user("system:serviceaccount:team:app") == Subject.service_account("team", "app")
    assert Subject.user("system:serviceaccount:broken").kind == "User"
    assert Subject.service_account("team", "app").username == "system:serviceaccount:team:app"


def test_ids() -> None:
    assert Subject.user("alice").id == "User:alice"
    assert Subject("Group", "sre").id == "Group:sre"
    assert Subject.service_account("ns", "sa").id == "ServiceAccount:ns/sa"


def test_implicit_groups() -> None:
    assert Subject.user("alice").groups() == ("system:authenticated",)
    assert Subject.user("system:anonymous").groups() == ("system:unauthenticated",)
    assert Subject.service_account("ns", "sa").groups() == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    )
    assert Subject("Group", "sre").groups() == ("sre", "system:authenticated")


def test_bindings_to_implicit_groups_apply() -> None:
    objects = [
        cluster_role("reader", [rule(resources=["secrets"], verbs=["list"])]),
        binding(
            "all-sa",
            "ClusterRole",
            "reader",
            [{"kind": "Group", "name": "system:serviceaccounts:team"}],
        ),
    ]
    model = RbacModel.from_objects(objects)
    assert model.permissions(Subject.service_account("team", "a")).check(
        Request("list", "secrets", namespace="x")
    )
    assert (
        model.permissions(Subject.service_account("other", "a")).check(
            Request("list", "secrets", namespace="x")
        )
        is None
    )
    assert model.permissions(Subject.user("bob")).check(Request("list", "secrets")) is None


def test_system_masters_bypasses_rbac() -> None:
    p = RbacModel.from_objects([]).permissions(Subject("Group", "system:masters"))
    assert p.superuser and p.check(Request("anything", "at-all", "any.group")) is not None


def test_subject_kind_unknown_is_refused() -> None:
    with pytest.raises(InventoryError):
        RbacModel.from_objects([binding("b", "ClusterRole", "x", [{"kind": "Robot", "name": "r"}])])


# --- aggregation --------------------------------------------------------------------------


def test_nested_aggregation_is_resolved() -> None:
    label = "rbac.authorization.k8s.io/aggregate-to-"
    objects = [
        cluster_role(
            "admin",
            [],
            aggregationRule={"clusterRoleSelectors": [{"matchLabels": {f"{label}admin": "true"}}]},
        ),
        cluster_role(
            "edit",
            [],
            labels={f"{label}admin": "true"},
            aggregationRule={"clusterRoleSelectors": [{"matchLabels": {f"{label}edit": "true"}}]},
        ),
        cluster_role(
            "piece", [rule(resources=["secrets"], verbs=["get"])], labels={f"{label}edit": "true"}
        ),
        binding("b", "ClusterRole", "admin", [USER], ns="team"),
    ]
    model = RbacModel.from_objects(objects)
    assert model.cluster_roles["admin"].rules == model.cluster_roles["piece"].rules
    assert model.permissions(Subject.user("alice")).check(
        Request("get", "secrets", namespace="team", name="s")
    )


@pytest.mark.parametrize(
    ("expression", "labels", "matches"),
    [
        ({"key": "a", "operator": "In", "values": ["1", "2"]}, {"a": "2"}, True),
        ({"key": "a", "operator": "In", "values": ["1"]}, {"a": "2"}, False),
        ({"key": "a", "operator": "In", "values": ["1"]}, {}, False),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, {"a": "2"}, True),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, {"a": "1"}, False),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, {}, True),
        ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
        ({"key": "a", "operator": "Exists"}, {}, False),
        ({"key": "a", "operator": "DoesNotExist"}, {}, True),
        ({"key": "a", "operator": "DoesNotExist"}, {"a": "x"}, False),
    ],
)
def test_label_selector_expressions(
    expression: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    selector = LabelSelector.from_json({"matchExpressions": [expression]}, "test")
    assert selector.matches(labels) is matches


def test_empty_selector_aggregates_nothing() -> None:
    assert not LabelSelector.from_json({}, "test").matches({"a": "b"})


def test_unknown_selector_operator_is_refused() -> None:
    with pytest.raises(InventoryError):
        LabelSelector.from_json({"matchExpressions": [{"key": "a", "operator": "Near"}]}, "t")


# --- built-ins and warnings ---------------------------------------------------------------


def test_builtin_roles_stand_in_when_missing() -> None:
    model = RbacModel.from_objects([binding("b", "ClusterRole", "admin", [USER], ns="team")])
    rules, builtin = model.cluster_role_rules("admin")
    assert builtin and rules == BUILTIN_ADMIN_RULES
    assert model.warnings == ()  # a built-in role is not "missing"
    assert model.permissions(Subject.user("alice")).check(
        Request("get", "secrets", namespace="team", name="s")
    )
    assert model.cluster_role_rules("nonesuch") == ((), False)


def test_binding_to_a_missing_role_warns_and_grants_nothing() -> None:
    model = RbacModel.from_objects([binding("b", "Role", "gone", [USER], ns="team")])
    assert len(model.warnings) == 1 and "gone" in model.warnings[0]
    assert model.permissions(Subject.user("alice")).rules == ()


def test_permissions_with_rules_is_idempotent() -> None:
    p = perms(
        [
            cluster_role("r", [rule(resources=["pods"], verbs=["get"])]),
            binding("b", "ClusterRole", "r", [USER]),
        ]
    )
    assert p.with_rules(p.rules) is p
    assert len(p.with_rules(p.rules[:1]).rules) == len(p.rules)


# --- malformed objects --------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        cluster_role("r", [{"apiGroups": [""], "resources": ["pods"]}]),  # no verbs
        cluster_role("r", [{"apiGroups": [""], "resources": "pods", "verbs": ["get"]}]),
        cluster_role("r", [{"apiGroups": [""], "resources": [1], "verbs": ["get"]}]),
        cluster_role("r", "not a list"),  # type: ignore[arg-type]
        {"kind": "ClusterRole", "metadata": {}},  # no name
        {"kind": "ClusterRole", "metadata": "x"},
        {"kind": "Role", "metadata": {"name": "r"}},  # no namespace
        {
            "kind": "RoleBinding",
            "metadata": {"name": "b"},
            "roleRef": {"kind": "Role", "name": "r"},
        },
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "b"},
            "roleRef": {"kind": "Role", "name": "r"},
        },
        {
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole"},
        },
        binding("b", "ClusterRole", "x", [{"kind": "User"}]),
        binding("b", "ClusterRole", "x", ["alice"]),  # type: ignore[list-item]
        cluster_role("r", [], labels={"a": 1}),
    ],
)
def test_malformed_rbac_objects_are_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(InventoryError):
        RbacModel.from_objects([obj])


def test_role_ref_and_kinds() -> None:
    r = Role.from_json(role("r", "ns", []))
    assert r.ref == "Role ns/r"
    assert Role.from_json(cluster_role("c", [])).ref == "ClusterRole c"
    with pytest.raises(InventoryError):
        Role.from_json({"kind": "Pod", "metadata": {"name": "p"}})


def test_request_str() -> None:
    assert str(Request("create", "pods", "", "exec", "ns", "p")) == "create pods/exec 'p' in ns"
    assert str(Request("create", "deployments", "apps")) == "create deployments.apps"
