"""The access matrix: the two example clusters against seed 003's two tables, cell by cell,
then every path and every refusal on small clusters built in the test."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from custodes.errors import ConfigError
from custodes.initdata.build import build
from custodes.initdata.encoding import ANNOTATION_KEY, encode_annotation
from custodes.k8s.access.agent_policy import AgentPolicy
from custodes.k8s.access.analysis import analyse, build_matrix
from custodes.k8s.access.inputs import load_files, parse_documents
from custodes.k8s.access.inventory import Inventory
from custodes.k8s.access.model import (
    CLUSTER_ADMIN_ID,
    INFRA_ADMIN_ID,
    BrokerModel,
    Matrix,
    MatrixOptions,
)
from custodes.k8s.errors import InventoryError
from custodes.sealed.keys import generate_signing_key
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal

VECTORS = Path(__file__).resolve().parents[3] / "vectors" / "access-matrix"
BEFORE = VECTORS / "before.yaml"
AFTER = VECTORS / "after.yaml"
WORKLOAD_ADMIN = "role:workload-admin:trading"
TLS = "ingress-system/ingress-tls"
DB = "trading/db-credentials"
API = "trading/api-key"
DB_PASSWORD = "trading/db-credentials[password]"
DB_USER = "trading/db-credentials[username]"
API_TOKEN = "trading/api-key[token]"


def matrix(path: Path, *, confidential: bool = False) -> Matrix:
    return build_matrix([path], MatrixOptions(confidential_cluster=confidential))


def labels(m: Matrix) -> dict[str, dict[str, str]]:
    return {p.id: {s.id: m.cell(p.id, s.id).label for s in m.secrets} for p in m.principals}


def vias(m: Matrix, principal: str, secret: str) -> set[str]:
    return {path.via for path in m.cell(principal, secret).paths}


def blocked(m: Matrix, principal: str, secret: str) -> dict[str, str]:
    return {path.via: path.blocked for path in m.cell(principal, secret).blocked}


# === seed 003, first table (before custodes) ==============================================
#
# The seed's tables are about the three ROLES, not individual subjects. Mapping used here:
#   "Infrastructure admin" -> row "infrastructure admin" (role:infrastructure-admin)
#   "Cluster admin"        -> row "cluster admin" (ClusterRole cluster-admin, cluster-wide)
#   "Workload admin"       -> row "workload admin (trading)" (ClusterRole admin in the
#                             workload's namespace, plus the owner of its broker)
# and the secrets: "Workloads secrets" / "Environment variables secrets" -> the trading
# workload's Secrets (db-credentials is env-injected, api-key is a volume);
# "Kubernetes control plane and configs" / "Cluster-wide configs" -> the platform's own Secret
# (ingress-system/ingress-tls, used by the ingress controller).
#
# Seed, first table:
#   Infrastructure admin | can: Physical hosts / hypervisors Networks Storage layer
#                        | can't: Kubernetes control plane and configs Workloads Secrets
#   Cluster admin        | can: Kubernetes API and control plane RBAC roles, namespaces,
#                          network policies, scheduling Workloads secrets Unencrypted memory
#                          of workloads | can't: Host OS Hypervisors
#   Workload admin       | can: Deploy applications Namespaces, deployments, pods Environment
#                          variables secrets | can't: Node settings Network policies
#                          Cluster-wide configs
#
# "Infrastructure admin can't access Secrets" holds only if the infrastructure admin cannot
# reach into the cluster's nodes (no etcd, no node disk or memory): the Confidential
# Clusters premise, --confidential-cluster. Without it the matrix says more than the table
# (see test_before_default_infrastructure_admin_reads_everything_from_etcd), as the seed's own
# prose does: "anyone with access to etcd can retrieve them".
SEED_BEFORE: dict[str, dict[str, str]] = {
    INFRA_ADMIN_ID: {TLS: "no", API: "no", DB: "no"},
    CLUSTER_ADMIN_ID: {TLS: "plaintext", API: "plaintext", DB: "plaintext"},
    WORKLOAD_ADMIN: {TLS: "no", API: "plaintext", DB: "plaintext"},
}

# Seed, second table (with CoCo sealed secrets):
#   Infrastructure admin | can: Physical hosts / hypervisors Networks Storage layer
#                        | can't: Kubernetes control and configs Workloads Node memory in
#                          cleartext Sealed secrets inside CoCo TEE
#   Cluster admin        | can: Kubernetes API and control plane RBAC roles, namespaces,
#                          network policies, scheduling | can't: Host OS Hypervisors Sealed
#                          workload secrets inside CoCo TEE Node memory in cleartext
#   Workload admin       | can: Only specific workloads running in TEEs Sealed secrets via
#                          Trustee KBS Namespace-scoped resources | can't: Node settings
#                          Network policies Cluster-wide configs
# Mapping as above; the sealed columns are one per sealed value. The cluster admin keeps the
# platform's own Secret ("Kubernetes API and control plane"); "sealed" is the cell
# "sealed: TEE only" (reaches the sealed value, never the plaintext); the infrastructure admin
# of a Confidential Cluster reaches nothing at all ("no").
SEED_AFTER: dict[str, dict[str, str]] = {
    INFRA_ADMIN_ID: {TLS: "no", API_TOKEN: "no", DB_PASSWORD: "no", DB_USER: "no"},
    CLUSTER_ADMIN_ID: {
        TLS: "plaintext",
        API_TOKEN: "sealed",
        DB_PASSWORD: "sealed",
        DB_USER: "sealed",
    },
    WORKLOAD_ADMIN: {
        TLS: "no",
        API_TOKEN: "plaintext",
        DB_PASSWORD: "plaintext",
        DB_USER: "plaintext",
    },
}


def test_before_matches_the_seeds_first_table_cell_by_cell() -> None:
    m = matrix(BEFORE, confidential=True)
    assert [s.id for s in m.secrets] == [TLS, API, DB]
    for principal, row in SEED_BEFORE.items():
        for secret, status in row.items():
            assert m.cell(principal, secret).status == status, (principal, secret)
    # "Cluster admin can access ... Unencrypted memory of workloads" (via a privileged pod).
    assert "node-memory" in vias(m, CLUSTER_ADMIN_ID, DB)
    # "... can't: Host OS, Hypervisors": no path of the cluster admin starts on the host.
    for secret in (TLS, API, DB):
        for path in m.cell(CLUSTER_ADMIN_ID, secret).paths:
            assert all(step.short != "host" for step in path.chain)
    # "Workload admin can access ... Environment variables secrets, deployments, pods".
    assert {"secrets/get", "pods/exec", "pods/create"} <= vias(m, WORKLOAD_ADMIN, DB)
    # "... can't: Node settings": no node path for the workload admin.
    assert not vias(m, WORKLOAD_ADMIN, DB) & {"etcd", "node-disk", "node-memory"}


def test_after_matches_the_seeds_second_table_cell_by_cell() -> None:
    m = matrix(AFTER, confidential=True)
    assert [s.id for s in m.secrets] == [TLS, API_TOKEN, DB_PASSWORD, DB_USER]
    for principal, row in SEED_AFTER.items():
        for secret, status in row.items():
            assert m.cell(principal, secret).status == status, (principal, secret)
    # "Workload admin can access Sealed secrets via Trustee KBS".
    for secret in (API_TOKEN, DB_PASSWORD, DB_USER):
        assert m.cell(WORKLOAD_ADMIN, secret).label == "plaintext via broker"
        # "Cluster admin can't access Node memory in cleartext" (of the TEE pod).
        assert blocked(m, CLUSTER_ADMIN_ID, secret)["node-memory"] == "TEE memory is encrypted"
        assert "secrets/get" in blocked(m, CLUSTER_ADMIN_ID, secret)
        assert "ExecProcessRequest" in blocked(m, CLUSTER_ADMIN_ID, secret)["pods/exec"]


def test_the_summary_answers_the_seeds_question() -> None:
    summary = matrix(AFTER, confidential=True).summary
    assert summary[0].startswith("infrastructure admin: can obtain 0 of 4")
    assert summary[1].startswith("cluster admin: can obtain 1 of 4 workload secrets in plaintext")
    assert "cannot obtain 3 (sealed, released only to an attested TEE)" in summary[1]
    assert any(s.startswith("workload admin (trading): can obtain 3 of 4") for s in summary)
    assert "exposed in plaintext to anyone but their workload admin: 0" in summary[-2]
    before = matrix(BEFORE, confidential=True).summary
    assert before[1].startswith("cluster admin: can obtain 3 of 3")


# === every row of the two example clusters (no Confidential Cluster) ======================
# Not from the seed: what the analysis says of each subject in the example RBAC, checked
# label by label so that a change of path or wording is seen.
EXPECTED_BEFORE: dict[str, dict[str, str]] = {
    INFRA_ADMIN_ID: {
        TLS: "plaintext via etcd",
        API: "plaintext via etcd",
        DB: "plaintext via etcd",
    },
    CLUSTER_ADMIN_ID: dict.fromkeys((TLS, API, DB), "plaintext via secrets/get"),
    # The ingress namespace's admin may impersonate the ingress controller's ServiceAccount,
    # which reads every Secret in the cluster.
    "role:workload-admin:ingress-system": {
        TLS: "plaintext via secrets/get",
        API: "plaintext via impersonate -> secrets/get",
        DB: "plaintext via impersonate -> secrets/get",
    },
    WORKLOAD_ADMIN: {TLS: "no", API: "plaintext via secrets/get", DB: "plaintext via secrets/get"},
    "User:release-bot": {
        TLS: "no",
        API: "plaintext via impersonate -> deployments/create",
        DB: "plaintext via impersonate -> deployments/create",
    },
    # exec into the privileged kube-proxy pod: root on a node.
    "Group:oncall": dict.fromkeys((TLS, API, DB), "plaintext via etcd"),
    "Group:platform-admins": dict.fromkeys((TLS, API, DB), "plaintext via secrets/get"),
    "Group:sre": dict.fromkeys((TLS, API, DB), "no"),
    "Group:system:masters": dict.fromkeys((TLS, API, DB), "plaintext via secrets/get"),
    "Group:trading-team": {
        TLS: "no",
        API: "plaintext via secrets/get",
        DB: "plaintext via secrets/get",
    },
    "ServiceAccount:ci/deployer": {
        TLS: "no",
        API: "plaintext via deployments/create",
        DB: "plaintext via deployments/create",
    },
    "ServiceAccount:ingress-system/ingress-nginx": dict.fromkeys(
        (TLS, API, DB), "plaintext via secrets/get"
    ),
    "ServiceAccount:kube-system/kube-proxy": dict.fromkeys((TLS, API, DB), "no"),
    # nodes/proxy reaches the kubelet's exec: no pods/exec permission needed.
    "ServiceAccount:monitoring/prometheus": dict.fromkeys(
        (TLS, API, DB), "plaintext via nodes/proxy"
    ),
    # resourceNames: db-credentials only.
    "ServiceAccount:trading/trading-engine": {
        TLS: "no",
        API: "no",
        DB: "plaintext via secrets/get",
    },
}
SEALED = "sealed: TEE only"
EXPECTED_AFTER: dict[str, dict[str, str]] = {
    INFRA_ADMIN_ID: {
        TLS: "plaintext via etcd",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    CLUSTER_ADMIN_ID: {
        TLS: "plaintext via secrets/get",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "role:workload-admin:ingress-system": {
        TLS: "plaintext via secrets/get",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    WORKLOAD_ADMIN: {
        TLS: "no",
        API_TOKEN: "plaintext via broker",
        DB_PASSWORD: "plaintext via broker",
        DB_USER: "plaintext via broker",
    },
    "User:release-bot": {TLS: "no", API_TOKEN: SEALED, DB_PASSWORD: SEALED, DB_USER: SEALED},
    "Group:oncall": {
        TLS: "plaintext via etcd",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "Group:platform-admins": {
        TLS: "plaintext via secrets/get",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "Group:sre": dict.fromkeys((TLS, API_TOKEN, DB_PASSWORD, DB_USER), "no"),
    "Group:system:masters": {
        TLS: "plaintext via secrets/get",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    # The workload admins as an RBAC group hold no broker identity: sealed to them too.
    "Group:trading-team": {TLS: "no", API_TOKEN: SEALED, DB_PASSWORD: SEALED, DB_USER: SEALED},
    "ServiceAccount:ci/deployer": {
        TLS: "no",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "ServiceAccount:ingress-system/ingress-nginx": {
        TLS: "plaintext via secrets/get",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "ServiceAccount:kube-system/kube-proxy": dict.fromkeys(
        (TLS, API_TOKEN, DB_PASSWORD, DB_USER), "no"
    ),
    "ServiceAccount:monitoring/prometheus": {
        TLS: "plaintext via nodes/proxy",
        API_TOKEN: SEALED,
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
    "ServiceAccount:trading/trading-engine": {
        TLS: "no",
        API_TOKEN: "no",
        DB_PASSWORD: SEALED,
        DB_USER: SEALED,
    },
}


def test_before_every_cell() -> None:
    assert labels(matrix(BEFORE)) == EXPECTED_BEFORE


def test_after_every_cell() -> None:
    assert labels(matrix(AFTER)) == EXPECTED_AFTER


def test_before_default_infrastructure_admin_reads_everything_from_etcd() -> None:
    m = matrix(BEFORE)
    for secret in (TLS, API, DB):
        assert {"etcd", "node-disk", "node-memory"} <= vias(m, INFRA_ADMIN_ID, secret)


def test_after_default_infrastructure_admin_is_stopped_by_the_tee() -> None:
    m = matrix(AFTER)
    stops = blocked(m, INFRA_ADMIN_ID, DB_PASSWORD)
    assert stops["etcd"] == "etcd holds only the sealed value"
    assert stops["node-disk"] == "the node holds only the sealed value"
    assert stops["node-memory"] == "TEE memory is encrypted"
    assert "SetPolicyRequest is forbidden" in stops["node-agent"]


def test_after_vector_workload_is_what_the_seed_describes() -> None:
    m = matrix(AFTER)
    (pod,) = [w for w in m.workloads if w.namespace == "trading"]
    assert pod.tee and pod.runtime_class == "kata-qemu-snp" and pod.custodes_run
    assert pod.broker_urls == ("https://broker.trading.example/tenants/trading",)
    assert pod.agent_policy is not None
    assert not pod.agent_policy.exec.allowed and not pod.agent_policy.any_container.allowed
    assert len(pod.init_data_digest) == 64
    sealed = {s.id: s for s in m.secrets if s.sealed}
    assert sealed[DB_PASSWORD].resource == "kbs:///trading/db/password"
    assert sealed[DB_PASSWORD].holders == (f"trading/{pod.name}",)
    assert m.warnings == ()


# === small clusters =======================================================================

KEY = generate_signing_key()
ALLOW_ALL = "package agent_policy\n\ndefault CreateContainerRequest := true\n"
LOCKED = (
    "package agent_policy\n\n"
    "default CreateContainerRequest := false\n"
    "default ExecProcessRequest := false\n"
    "default WriteStreamRequest := false\n"
    "default SetPolicyRequest := false\n"
)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def sealed_value(resource: str = "kbs:///app/key/one") -> str:
    return seal(VaultPayload(name=resource), KEY, "kbs:///app/signing-key/sealed")


def initdata(policy: str | None, url: str = "https://broker.example/tenants/app") -> str:
    aa = f'[token_configs]\n[token_configs.kbs]\nurl = "{url}"\n'
    return encode_annotation(build(aa=aa, policy=policy))


def secret(name: str, ns: str = "app", **data: str) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {k: b64(v) for k, v in data.items()},
    }


def pod(
    name: str,
    ns: str = "app",
    *,
    env_secret: str | None = "creds",  # noqa: S107 (a Secret's name)
    volume_secret: str | None = None,
    runtime: str | None = None,
    policy: str | bool | None = False,  # False: no init-data at all
    sa: str = "runner",
    privileged: bool = False,
    stdin: bool = False,
    phase: str = "Running",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "example/app"}
    spec: dict[str, Any] = {"serviceAccountName": sa, "containers": [container], "nodeName": "n1"}
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if env_secret:
        container["env"] = [
            {"name": "V", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "v"}}}
        ]
    if volume_secret:
        spec["volumes"] = [{"name": "s", "secret": {"secretName": volume_secret}}]
        container["volumeMounts"] = [{"name": "s", "mountPath": "/s"}]
    if runtime:
        spec["runtimeClassName"] = runtime
    if policy is not False:
        meta["annotations"] = {
            ANNOTATION_KEY: initdata(policy if isinstance(policy, str) else None)
        }
    if privileged:
        container["securityContext"] = {"privileged": True}
    if stdin:
        container["stdin"] = True
    return {"kind": "Pod", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def namespace(name: str, level: str | None = None) -> dict[str, Any]:
    labels = {"pod-security.kubernetes.io/enforce": level} if level else {}
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def grant(
    user: str,
    rules: list[dict[str, Any]],
    ns: str = "",
    name: str | None = None,
) -> list[dict[str, Any]]:
    """A ClusterRole with ``rules`` bound to User ``user`` (in ``ns``, or cluster-wide)."""
    role_name = name or f"{user}-role"
    bind: dict[str, Any] = {
        "kind": "RoleBinding" if ns else "ClusterRoleBinding",
        "metadata": {"name": f"{user}-binding", **({"namespace": ns} if ns else {})},
        "roleRef": {"kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "User", "name": user}],
    }
    return [{"kind": "ClusterRole", "metadata": {"name": role_name}, "rules": rules}, bind]


def r(verbs: list[str], resources: list[str], group: str = "", **kw: Any) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **kw}


BASE = [namespace("app", "restricted"), namespace("kube-system")]


def run(objects: list[dict[str, Any]], **options: Any) -> Matrix:
    return analyse(Inventory.from_objects([*BASE, *objects]), MatrixOptions(**options))


def cell_label(m: Matrix, user: str, secret: str) -> str:
    return m.cell(f"User:{user}", secret).label


# --- plain Secrets ------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["get", "list", "watch", "update", "patch"])
def test_each_secret_verb_reads_the_plaintext(verb: str) -> None:
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [r([verb], ["secrets"])], "app")])
    assert cell_label(m, "u", "app/creds") == f"plaintext via secrets/{verb}"


def test_delete_and_create_on_secrets_read_nothing() -> None:
    m = run(
        [
            secret("creds", v="x"),
            pod("p"),
            *grant("u", [r(["delete", "create"], ["secrets"])], "app"),
        ]
    )
    assert cell_label(m, "u", "app/creds") == "no"


def test_resource_names_are_honoured() -> None:
    objects = [
        secret("creds", v="x"),
        secret("other", v="y"),
        pod("p"),
        pod("q", env_secret="other"),
    ]
    m = run([*objects, *grant("u", [r(["get"], ["secrets"], resourceNames=["other"])], "app")])
    assert cell_label(m, "u", "app/creds") == "no"
    assert cell_label(m, "u", "app/other") == "plaintext via secrets/get"


def test_wildcards_in_verbs_resources_and_groups() -> None:
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [r(["*"], ["*"], "*")], "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via secrets/get"


@pytest.mark.parametrize("verb", ["create", "get"])
def test_exec_into_a_pod_that_holds_it(verb: str) -> None:
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [r([verb], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via pods/exec"


def test_exec_into_a_pod_that_does_not_hold_it() -> None:
    m = run(
        [
            secret("creds", v="x"),
            pod("p"),
            pod("q", env_secret=None),
            *grant("u", [r(["create"], ["pods/exec"], resourceNames=["q"])], "app"),
        ]
    )
    assert cell_label(m, "u", "app/creds") == "no"


def test_attach_needs_a_container_with_stdin() -> None:
    rules = [r(["create"], ["pods/attach"])]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "no"
    m = run([secret("creds", v="x"), pod("p", stdin=True), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via pods/attach"


def test_nodes_proxy_bypasses_pods_exec() -> None:
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [r(["get"], ["nodes/proxy"])])])
    assert cell_label(m, "u", "app/creds") == "plaintext via nodes/proxy"


@pytest.mark.parametrize(
    ("rule_", "via"),
    [
        (r(["create"], ["pods"]), "pods/create"),
        (r(["create"], ["deployments"], "apps"), "deployments/create"),
        (r(["create"], ["statefulsets"], "apps"), "statefulsets/create"),
        (r(["create"], ["daemonsets"], "apps"), "daemonsets/create"),
        (r(["create"], ["replicasets"], "apps"), "replicasets/create"),
        (r(["create"], ["jobs"], "batch"), "jobs/create"),
        (r(["create"], ["cronjobs"], "batch"), "cronjobs/create"),
        (r(["create"], ["replicationcontrollers"]), "replicationcontrollers/create"),
    ],
)
def test_creating_a_pod_that_mounts_it(rule_: dict[str, Any], via: str) -> None:
    # Any Secret in the namespace can be mounted, used by a pod or not.
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [rule_], "app")])
    assert cell_label(m, "u", "app/creds") == f"plaintext via {via}"


def test_patching_an_existing_controller_counts_only_if_one_exists() -> None:
    rules = [r(["patch"], ["deployments"], "apps")]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "no"
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "app"},
        "spec": {"template": pod("t")},
    }
    m = run([secret("creds", v="x"), pod("p"), deployment, *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via deployments/patch"


def test_patching_a_pod_swaps_its_image() -> None:
    m = run([secret("creds", v="x"), pod("p"), *grant("u", [r(["patch"], ["pods"])], "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via pods/patch"
    rules = [r(["update"], ["pods/ephemeralcontainers"])]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via pods/ephemeralcontainers"


def test_mutating_webhooks_rewrite_every_new_pod() -> None:
    rules = [r(["create"], ["mutatingwebhookconfigurations"], "admissionregistration.k8s.io")]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules)])
    assert "mutating-webhook" in vias(m, "User:u", "app/creds")


# --- impersonation and identities ---------------------------------------------------------


def reader_sa() -> list[dict[str, Any]]:
    return [
        {"kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [r(["get"], ["secrets"])]},
        {
            "kind": "RoleBinding",
            "metadata": {"name": "reader", "namespace": "app"},
            "roleRef": {"kind": "ClusterRole", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "runner"}],
        },
    ]


def test_impersonating_a_service_account() -> None:
    objects = [secret("creds", v="x"), pod("p"), *reader_sa()]
    rules = [r(["impersonate"], ["serviceaccounts"], resourceNames=["runner"])]
    m = run([*objects, *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via impersonate -> secrets/get"
    # The same through the service account's user name.
    rules = [r(["impersonate"], ["users"], resourceNames=["system:serviceaccount:app:runner"])]
    m = run([*objects, *grant("v", rules)])
    assert cell_label(m, "v", "app/creds") == "plaintext via impersonate -> secrets/get"


def test_impersonating_system_masters_is_cluster_admin() -> None:
    rules = [r(["impersonate"], ["groups"], resourceNames=["system:masters"])]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules)])
    assert cell_label(m, "u", "app/creds") == "plaintext via impersonate -> secrets/get"
    assert m.cell("User:u", "app/creds").paths[0].chain[0].detail.startswith("impersonate groups")


def test_service_account_token_request() -> None:
    objects = [secret("creds", v="x"), pod("p"), *reader_sa()]
    rules = [r(["create"], ["serviceaccounts/token"], resourceNames=["runner"])]
    m = run([*objects, *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via serviceaccounts/token -> secrets/get"


def test_legacy_token_secret_is_an_identity() -> None:
    token = secret("runner-token", t="x")
    token["type"] = "kubernetes.io/service-account-token"
    token["metadata"]["annotations"] = {"kubernetes.io/service-account.name": "runner"}
    other = secret("creds", ns="other", v="x")
    objects = [token, other, pod("q", ns="other"), *reader_sa()]
    objects[-1]["metadata"]["namespace"] = "other"
    objects[-1]["subjects"] = [{"kind": "ServiceAccount", "name": "runner", "namespace": "app"}]
    rules = [r(["get"], ["secrets"], resourceNames=["runner-token"])]
    m = run([*objects, *grant("u", rules, "app")])
    assert cell_label(m, "u", "other/creds") == "plaintext via secrets/get token -> secrets/get"


def test_pod_creation_runs_as_any_service_account_of_the_namespace() -> None:
    # The reader SA reads Secrets in "other"; whoever creates pods in "app" becomes it.
    binding = reader_sa()[1]
    binding["metadata"]["namespace"] = "other"
    binding["subjects"] = [{"kind": "ServiceAccount", "name": "runner", "namespace": "app"}]
    objects = [
        namespace("other", "restricted"),
        secret("creds", ns="other", v="x"),
        pod("q", ns="other"),
        reader_sa()[0],
        binding,
    ]
    m = run([*objects, *grant("u", [r(["create"], ["pods"])], "app")])
    assert cell_label(m, "u", "other/creds") == "plaintext via pods/create as SA -> secrets/get"


def test_exec_into_a_pod_takes_its_token() -> None:
    binding = reader_sa()[1]
    binding["metadata"]["namespace"] = "other"
    binding["subjects"] = [{"kind": "ServiceAccount", "name": "runner", "namespace": "app"}]
    objects = [
        namespace("other", "restricted"),
        secret("creds", ns="other", v="x"),
        pod("q", ns="other"),
        pod("p", env_secret=None),
        reader_sa()[0],
        binding,
    ]
    m = run([*objects, *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "other/creds") == "plaintext via pods/exec token -> secrets/get"
    no_token = pod("p", env_secret=None)
    no_token["spec"]["automountServiceAccountToken"] = False
    objects[3] = no_token
    m = run([*objects, *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "other/creds") == "no"


def test_certificate_approval_is_cluster_admin() -> None:
    group = "certificates.k8s.io"
    rules = [
        r(["create"], ["certificatesigningrequests"], group),
        r(["update"], ["certificatesigningrequests/approval"], group),
        r(["approve"], ["signers"], group, resourceNames=["kubernetes.io/kube-apiserver-client"]),
    ]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules)])
    assert cell_label(m, "u", "app/creds") == "plaintext via certificate -> secrets/get"
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules[:2])])
    assert cell_label(m, "u", "app/creds") == "no"


def test_bind_grants_the_bound_role() -> None:
    rbac = "rbac.authorization.k8s.io"
    objects = [
        secret("creds", v="x"),
        pod("p"),
        {"kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [r(["get"], ["secrets"])]},
    ]
    rules = [
        r(["create"], ["rolebindings"], rbac),
        r(["bind"], ["clusterroles"], rbac, resourceNames=["reader"]),
    ]
    m = run([*objects, *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via secrets/get"
    assert "bind ClusterRole reader in app" in m.cell("User:u", "app/creds").paths[0].detail
    m = run([*objects, *grant("u", rules[:1], "app")])
    assert cell_label(m, "u", "app/creds") == "no"


def test_escalate_grants_everything() -> None:
    rbac = "rbac.authorization.k8s.io"
    rules = [r(["escalate", "update"], ["clusterroles"], rbac)]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules)])
    assert cell_label(m, "u", "app/creds") == "plaintext via secrets/get"
    rules = [r(["escalate", "patch"], ["roles"], rbac)]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds") == "plaintext via secrets/get"


# --- node access --------------------------------------------------------------------------


def test_privileged_pod_where_pod_security_admits_it() -> None:
    rules = [r(["create"], ["pods"])]
    # kube-system has no Pod Security label: a privileged pod there is root on a node.
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "kube-system")])
    assert cell_label(m, "u", "app/creds") == "plaintext via etcd"
    assert {"etcd", "node-disk", "node-memory"} <= vias(m, "User:u", "app/creds")
    # "app" is restricted: only a pod that mounts the Secret.
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert vias(m, "User:u", "app/creds") == {"pods/create"}


def test_relabelling_a_namespace_lifts_pod_security() -> None:
    rules = [r(["create"], ["pods"]), r(["patch"], ["namespaces"])]
    m = run([secret("creds", v="x"), pod("p"), *grant("u", rules, "app")])
    assert "etcd" in vias(m, "User:u", "app/creds")


def test_without_namespace_objects_privileged_pods_are_assumed() -> None:
    inv = Inventory.from_objects(
        [secret("creds", v="x"), pod("p"), *grant("u", [r(["create"], ["pods"])], "app")]
    )
    assert any("no Namespace objects" in w for w in inv.warnings)
    assert "etcd" in vias(analyse(inv), "User:u", "app/creds")


@pytest.mark.parametrize("how", ["exec", "patch"])
def test_existing_privileged_pod_is_node_access(how: str) -> None:
    rule_ = r(["create"], ["pods/exec"]) if how == "exec" else r(["patch"], ["pods"])
    objects = [
        secret("creds", v="x"),
        pod("p"),
        pod("daemon", "kube-system", env_secret=None, privileged=True),
    ]
    m = run([*objects, *grant("u", [rule_], "kube-system")])
    assert cell_label(m, "u", "app/creds") == "plaintext via etcd"


def test_privileged_tee_pod_is_node_access_only_if_its_agent_policy_allows() -> None:
    rules = [r(["create"], ["pods/exec"]), r(["patch"], ["pods"])]
    daemon = pod("daemon", "kube-system", env_secret=None, privileged=True, runtime="kata-cc")
    for policy, label in ((LOCKED, "no"), (ALLOW_ALL, "plaintext via etcd")):
        daemon["metadata"]["annotations"] = {ANNOTATION_KEY: initdata(policy)}
        objects = [secret("creds", v="x"), pod("p"), daemon]
        m = run([*objects, *grant("u", rules, "kube-system")])
        assert cell_label(m, "u", "app/creds") == label


def test_host_path_and_host_pid_are_privileged() -> None:
    daemon = pod("daemon", "kube-system", env_secret=None)
    daemon["spec"]["hostPID"] = True
    objects = [secret("creds", v="x"), pod("p"), daemon]
    m = run([*objects, *grant("u", [r(["create"], ["pods/exec"])], "kube-system")])
    assert cell_label(m, "u", "app/creds") == "plaintext via etcd"


def test_infrastructure_admin_and_confidential_clusters() -> None:
    objects = [secret("creds", v="x"), pod("p")]
    assert run(objects).cell(INFRA_ADMIN_ID, "app/creds").label == "plaintext via etcd"
    assert run(objects, confidential_cluster=True).cell(INFRA_ADMIN_ID, "app/creds").label == "no"


# --- sealed secrets and TEE pods ----------------------------------------------------------


def sealed_cluster(**pod_options: Any) -> list[dict[str, Any]]:
    options: dict[str, Any] = {"runtime": "kata-qemu-tdx", "policy": LOCKED} | pod_options
    return [secret("creds", v=sealed_value()), pod("p", **options)]


EVERYTHING = [r(["*"], ["*"], "*")]


def test_sealed_in_a_locked_tee_pod_is_tee_only() -> None:
    m = run([*sealed_cluster(), *grant("u", EVERYTHING, "app")])
    assert cell_label(m, "u", "app/creds[v]") == SEALED
    assert m.cell(CLUSTER_ADMIN_ID, "app/creds[v]").label == SEALED
    assert m.cell(INFRA_ADMIN_ID, "app/creds[v]").label == SEALED
    assert m.cell("role:workload-admin:app", "app/creds[v]").label == "plaintext via broker"


def test_sealed_secret_with_no_reach_is_no() -> None:
    m = run([*sealed_cluster(), *grant("u", [r(["get"], ["configmaps"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "no"


def test_exec_allowed_by_the_agent_policy_exposes_the_plaintext() -> None:
    policy = LOCKED.replace(
        "default ExecProcessRequest := false", "default ExecProcessRequest := true"
    )
    m = run([*sealed_cluster(policy=policy), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/exec"
    # The host can exec through the agent API too.
    assert "node-agent" in vias(m, INFRA_ADMIN_ID, "app/creds[v]")


def test_exec_rules_in_the_agent_policy_are_assumed_to_allow() -> None:
    policy = LOCKED + (
        '\nExecProcessRequest if {\n    concat(" ", input.process.Args) in '
        'policy_data.allowed_commands\n}\n\npolicy_data := {"allowed_commands": ["ls /"]}\n'
    )
    m = run([*sealed_cluster(policy=policy), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/exec"
    (w,) = [w for w in m.workloads if w.name == "p"]
    assert w.agent_policy is not None and "ls /" in w.agent_policy.exec.why


def test_set_policy_lets_the_host_replace_a_locked_policy() -> None:
    policy = LOCKED.replace("default SetPolicyRequest := false\n", "")
    m = run(sealed_cluster(policy=policy))
    paths = {p.via: p for p in m.cell(INFRA_ADMIN_ID, "app/creds[v]").paths}
    assert "SetPolicyRequest" in paths["node-agent"].detail
    # Through the Kubernetes API, SetPolicy is unreachable: exec stays forbidden.
    m = run([*sealed_cluster(policy=policy), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == SEALED


def test_attach_into_a_tee_pod_follows_write_stream() -> None:
    rules = [r(["create"], ["pods/attach"])]
    m = run([*sealed_cluster(stdin=True), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds[v]") == SEALED
    assert "WriteStreamRequest" in blocked(m, "User:u", "app/creds[v]")["pods/attach"]
    policy = LOCKED.replace("default WriteStreamRequest := false\n", "")
    m = run([*sealed_cluster(stdin=True, policy=policy), *grant("u", rules, "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/attach"


def test_unpinned_containers_let_a_pod_creator_take_the_secret() -> None:
    # Same init-data, own container: the broker sees what it expects. Any namespace will do.
    objects = [*sealed_cluster(policy=ALLOW_ALL), namespace("elsewhere", "restricted")]
    m = run([*objects, *grant("u", [r(["create"], ["pods"])], "elsewhere")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/create"
    assert "node-tee" in vias(m, INFRA_ADMIN_ID, "app/creds[v]")


def test_pinned_containers_stop_pod_creators_and_image_swaps() -> None:
    rules = [r(["create", "patch"], ["pods"]), r(["patch"], ["pods/ephemeralcontainers"])]
    m = run([*sealed_cluster(), *grant("u", rules, "app")])
    stops = blocked(m, "User:u", "app/creds[v]")
    assert "pins the containers" in stops["pods/create"]
    assert "CreateContainerRequest" in stops["pods/patch"]
    assert "CreateContainerRequest" in stops["pods/ephemeralcontainers"]


def test_tee_pod_without_init_data_is_exposed() -> None:
    m = run([*sealed_cluster(policy=False), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/exec"
    assert any("without init-data" in w for w in m.warnings)


def test_init_data_without_policy_uses_the_image_default() -> None:
    m = run([*sealed_cluster(policy=None), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/exec"


def test_init_data_that_does_not_decode_is_treated_as_unknown() -> None:
    objects = sealed_cluster()
    objects[1]["metadata"]["annotations"][ANNOTATION_KEY] = "not base64!"
    m = run([*objects, *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert cell_label(m, "u", "app/creds[v]") == "plaintext via pods/exec"
    assert any("does not decode" in w for w in m.warnings)


def test_sealed_value_in_a_non_tee_pod_reaches_no_one() -> None:
    m = run([*sealed_cluster(runtime=None, policy=False), *grant("u", EVERYTHING, "app")])
    assert cell_label(m, "u", "app/creds[v]") == SEALED
    assert "not in a TEE" in blocked(m, "User:u", "app/creds[v]")["pods/exec"]


def test_plain_secret_in_a_tee_pod_is_still_plain() -> None:
    objects = [secret("creds", v="x"), pod("p", runtime="kata-cc", policy=LOCKED)]
    m = run(objects)
    assert m.cell(INFRA_ADMIN_ID, "app/creds").label == "plaintext via etcd"
    assert "node-disk" in vias(m, INFRA_ADMIN_ID, "app/creds")
    assert "node-memory" not in vias(m, INFRA_ADMIN_ID, "app/creds")


def test_coco_dev_is_listed_but_warned_about() -> None:
    m = run(sealed_cluster(runtime="kata-qemu-coco-dev"))
    assert any("not a hardware TEE" in w for w in m.warnings)


def test_tee_runtime_classes_are_configurable() -> None:
    objects = [
        *sealed_cluster(runtime="my-cvm"),
        *grant("u", [r(["create"], ["pods/exec"])], "app"),
    ]
    inv = Inventory.from_objects([*BASE, *objects], ("my-cvm",))
    m = analyse(inv, MatrixOptions(tee_runtime_classes=("my-cvm",)))
    assert cell_label(m, "u", "app/creds[v]") == SEALED
    # With the default list, "my-cvm" is no TEE: the pod never gets the plaintext.
    assert "not in a TEE" in blocked(run(objects), "User:u", "app/creds[v]")["pods/exec"]


def test_broker_accepting_sample_evidence_exposes_everything(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text("[attestation]\nunsafe_allow_sample_tee = true\n")
    broker = BrokerModel.from_arg(str(config))
    assert broker.accepts_sample and broker.url == "http://127.0.0.1:8080"
    m = run(sealed_cluster(), broker=broker)
    assert m.cell(INFRA_ADMIN_ID, "app/creds[v]").label == "plaintext via broker-sample"
    assert m.cell(CLUSTER_ADMIN_ID, "app/creds[v]").label == "plaintext via broker-sample"
    assert any("accepts sample evidence" in w for w in m.warnings)


def test_broker_config_without_sample_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[server]\nlisten = "0.0.0.0:9443"\n')
    broker = BrokerModel.from_arg(str(config))
    assert not broker.accepts_sample and broker.url == "http://0.0.0.0:9443"
    m = run(sealed_cluster(), broker=broker)
    assert m.cell(CLUSTER_ADMIN_ID, "app/creds[v]").label == SEALED


def test_broker_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        BrokerModel.from_arg(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[nonsense]\n")
    with pytest.raises(ConfigError):
        BrokerModel.from_arg(str(bad))
    assert BrokerModel.from_arg("https://b.example/").url == "https://b.example"


def test_broker_url_names_the_broker_of_pods_without_one() -> None:
    m = run(sealed_cluster(policy=False, runtime=None), broker=BrokerModel.from_arg("https://b"))
    (col,) = m.secrets
    assert col.brokers == ("https://b",)


def test_a_shared_broker_makes_workload_admins_share_secrets() -> None:
    other = [
        namespace("two", "restricted"),
        secret("creds", ns="two", v=sealed_value("kbs:///two/key/one")),
        pod("p", ns="two", runtime="kata-cc", policy=LOCKED),
    ]
    m = run([*sealed_cluster(), *other])
    # Both pods' init-data name the same broker (no tenant path): one workload admin really.
    assert m.cell("role:workload-admin:two", "app/creds[v]").label == "plaintext via broker"
    assert "shared broker" in m.cell("role:workload-admin:two", "app/creds[v]").paths[0].detail
    # A tenant URL per namespace separates them.
    other[2]["metadata"]["annotations"][ANNOTATION_KEY] = initdata(
        LOCKED, "https://broker.example/tenants/two"
    )
    m = run([*sealed_cluster(), *other])
    assert m.cell("role:workload-admin:two", "app/creds[v]").label == "no"
    summary = m.summary[-2]
    assert "exposed in plaintext to anyone but their workload admin: 0" in summary


def test_exposed_sealed_secrets_are_named_in_the_summary() -> None:
    m = run([*sealed_cluster(policy=False), *grant("u", [r(["create"], ["pods/exec"])], "app")])
    assert (
        "exposed in plaintext to anyone but their workload admin: 1: app/creds[v] (to "
        in (m.summary[-2])
    )


def test_workload_namespaces_option() -> None:
    m = run(sealed_cluster(), workload_namespaces=("app", "ops"))
    assert [p.id for p in m.principals if p.is_role][2:] == [
        "role:workload-admin:app",
        "role:workload-admin:ops",
    ]


# --- columns ------------------------------------------------------------------------------


def test_columns_from_env_envfrom_volumes_and_projected() -> None:
    p = pod("p", env_secret=None, volume_secret="vol")
    p["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "bulk"}}]
    p["spec"]["volumes"].append(
        {
            "name": "proj",
            "projected": {
                "sources": [{"secret": {"name": "proj", "items": [{"key": "k", "path": "k"}]}}]
            },
        }
    )
    objects = [
        p,
        secret("vol", a="1"),
        secret("bulk", b="2"),
        secret("proj", k="3", other="4"),
        secret("unused", c="5"),
    ]
    m = run(objects)
    assert [s.id for s in m.secrets] == ["app/bulk", "app/proj", "app/vol"]
    # The projected volume is not mounted: the kubelet still materialises it on the node.
    (w,) = m.workloads
    assert {(ref.secret, ref.container) for ref in w.refs} >= {("proj", ""), ("vol", "main")}


def test_mixed_secret_has_a_plain_and_a_sealed_column() -> None:
    objects = [secret("creds", v="plain", s=sealed_value()), pod("p")]
    objects[1]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "creds"}}]
    m = run(objects)
    assert [s.id for s in m.secrets] == ["app/creds", "app/creds[s]"]
    assert m.cell(INFRA_ADMIN_ID, "app/creds").status == "plaintext"


def test_only_sealed_keys_used_gives_no_plain_column() -> None:
    objects = [secret("creds", v=sealed_value(), other="plain"), pod("p")]
    m = run(objects)
    assert [s.id for s in m.secrets] == ["app/creds[v]"]


def test_missing_secret_is_assumed_plain() -> None:
    m = run([pod("p")])
    (col,) = m.secrets
    assert col.keys is None and not col.sealed
    assert m.cell(INFRA_ADMIN_ID, "app/creds").label == "plaintext via etcd"


def test_value_that_only_looks_sealed_is_plain() -> None:
    m = run([secret("creds", v="sealed.not-really"), pod("p")])
    assert [s.id for s in m.secrets] == ["app/creds"]
    assert any("does not parse" in w for w in m.warnings)


def test_legacy_unsigned_sealed_value_is_sealed_with_a_warning() -> None:
    from custodes.sealed.format import legacy_unsigned

    legacy = legacy_unsigned(VaultPayload(name="kbs:///a/b/c").to_json())
    m = run([secret("creds", v=legacy), pod("p")])
    assert m.secrets[0].sealed and m.secrets[0].resource == "kbs:///a/b/c"
    assert any("unsigned" in w for w in m.warnings)


def test_finished_pods_hold_nothing() -> None:
    m = run([secret("creds", v="x"), pod("p", phase="Succeeded")])
    assert m.secrets == ()


def test_templates_are_read_but_hold_nothing_to_exec_into() -> None:
    deployment = {
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "app"},
        "spec": {"jobTemplate": {"spec": {"template": pod("t")}}},
    }
    m = run(
        [secret("creds", v="x"), deployment, *grant("u", [r(["create"], ["pods/exec"])], "app")]
    )
    assert [s.holders for s in m.secrets] == [("app/CronJob/nightly",)]
    assert cell_label(m, "u", "app/creds") == "no"


# --- input --------------------------------------------------------------------------------


def test_lists_and_multi_document_yaml() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n- {kind: Namespace, metadata: {name: a}}\n"
        "- apiVersion: v1\n  kind: SecretList\n  items:\n"
        "  - {kind: Secret, metadata: {name: s, namespace: a}}\n"
        "---\n---\nkind: Pod\nmetadata: {name: p, namespace: a}\n"
    )
    assert [o["kind"] for o in parse_documents(text)] == ["Namespace", "Secret", "Pod"]


@pytest.mark.parametrize(
    "text",
    ["kind: [unclosed", "- just\n- a list\n", "metadata: {name: x}\n", "kind: List\nitems: 3\n"],
)
def test_unusable_yaml_is_refused(text: str) -> None:
    with pytest.raises(InventoryError):
        parse_documents(text)


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InventoryError):
        load_files([tmp_path / "missing.yaml"])
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(InventoryError):
        load_files([binary])


def test_several_files_and_duplicates(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text("kind: Namespace\nmetadata: {name: a}\n")
    two = tmp_path / "two.yaml"
    two.write_text("kind: Namespace\nmetadata: {name: a, labels: {x: y}}\n")
    inv = Inventory.from_objects(load_files([one, one, two]))
    assert inv.namespaces == ("a",)
    assert len([w for w in inv.warnings if "appears twice" in w]) == 1


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": "Pod", "metadata": {"name": "p"}},  # no namespace
        {"kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "data": {"k": "!!"}},
        {"kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "data": {"k": 1}},
        {"kind": "Secret", "metadata": {"name": "s", "namespace": "a"}, "stringData": {"k": 1}},
        {"kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": "x"}},
        {"kind": "Pod", "metadata": {"name": "p", "namespace": "a"}, "spec": {"containers": [{}]}},
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {
                "containers": [
                    {"name": "c", "env": [{"valueFrom": {"secretKeyRef": {"name": "s"}}}]}
                ]
            },
        },
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"volumes": [{"name": "v", "secret": {}}]},
        },
    ],
)
def test_malformed_workload_objects_are_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(InventoryError):
        Inventory.from_objects([obj])


def test_string_data_is_read() -> None:
    obj = {
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "app"},
        "stringData": {"v": sealed_value()},
    }
    m = run([obj, pod("p")])
    assert [s.id for s in m.secrets] == ["app/creds[v]"]


# --- the agent policy reader --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "exec_allowed"),
    [
        ("default ExecProcessRequest := false\n", False),
        ("default ExecProcessRequest = false\n", False),
        ("  default   ExecProcessRequest:=false # no exec\n", False),
        ("default ExecProcessRequest := true\n", True),
        ("", True),
        ("# default ExecProcessRequest := false\n", True),
        ("default ExecProcessRequest := false\nExecProcessRequest if { true }\n", True),
        ("default ExecProcessRequest := false\nExecProcessRequest {\n  true\n}\n", True),
        ("ExecProcessRequest := true\n", True),
        # A reference in a rule body is not a rule head.
        ("default ExecProcessRequest := false\nx if {\n  ExecProcessRequest == false\n}\n", False),
        # What the compiled policy says, not what a text search finds: a "default" inside a
        # raw string is no default, a rule head inside one is no rule.
        ("x := `\ndefault ExecProcessRequest := false\n`\n", True),
        ("default ExecProcessRequest := false\nx := `\nExecProcessRequest if { true }\n`\n", False),
    ],
)
def test_agent_policy_exec_verdicts(text: str, exec_allowed: bool) -> None:
    policy = "package agent_policy\n" + text
    assert AgentPolicy.from_rego(policy, None).exec.allowed is exec_allowed


def test_agent_policy_that_does_not_compile_allows_everything() -> None:
    refused = AgentPolicy.from_rego("default ExecProcessRequest := false\n", None)  # no package
    assert refused.exec.allowed and "refused" in refused.exec.why


def test_agent_policy_unknown_allows_everything() -> None:
    policy = AgentPolicy.unknown("why")
    assert policy.exec.allowed and policy.stdin.allowed and policy.any_container.allowed
    assert policy.host_exec().allowed


def test_agent_policy_host_exec() -> None:
    locked = AgentPolicy.from_rego(LOCKED, None)
    assert not locked.host_exec().allowed
    assert not locked.any_container.allowed
    open_set = AgentPolicy.from_rego(
        LOCKED.replace("SetPolicyRequest := false", "SetPolicyRequest := true"), None
    )
    assert open_set.host_exec().allowed


def test_workload_summary_in_json() -> None:
    doc = matrix(AFTER).to_json()
    (engine,) = [w for w in doc["workloads"] if w["id"].startswith("trading/")]
    assert engine["tee"] and engine["agent_policy"]["exec"]["allowed"] is False
    assert engine["brokers"] == ["https://broker.trading.example/tenants/trading"]


def test_line_wrapped_secret_data_is_read_as_kubernetes_reads_it() -> None:
    """`kubectl kustomize` wraps long base64 values at 76 columns; Kubernetes (Go's decoder)
    skips the line breaks. A sealed value wrapped that way is still recognised as sealed."""
    from custodes.k8s.access.inventory import secret_data_bytes

    value = sealed_value()
    encoded = base64.b64encode(value.encode()).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    assert "\n" in wrapped.rstrip("\n")
    assert secret_data_bytes(wrapped) == value.encode()
    assert secret_data_bytes(wrapped.replace("\n", "\r\n")) == value.encode()
    objects = [secret("wrapped", one=value)]
    objects[0]["data"]["one"] = wrapped
    inventory = Inventory.from_objects(objects)
    obj = inventory.secrets[("app", "wrapped")]
    assert [s.key for s in obj.sealed] == ["one"]
    assert obj.plain_keys == frozenset()


@pytest.mark.parametrize("bad", ["not base64!", "YWJj ZA==", "YWJjZA", "YW\tJjZA=="])
def test_secret_data_that_kubernetes_refuses_is_refused(bad: str) -> None:
    from custodes.k8s.access.inventory import secret_data_bytes

    with pytest.raises(ValueError, match="not padded standard base64"):
        secret_data_bytes(bad)
