"""The access matrix's options and results: frozen values, and their JSON form.

Rows are :class:`Principal` (the three administrative roles, then every User, Group and
ServiceAccount), columns :class:`WorkloadSecret`, and each :class:`Cell` keeps every
:class:`AccessPath` that yields the plaintext and every one that was stopped, with the chain
of "can act as" :class:`Step` that leads to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from custodes.errors import ConfigError
from custodes.k8s.access.inventory import Workload
from custodes.k8s.access.rbac import Subject
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES
from custodes.types.json import JsonObject

CLUSTER_ADMIN_ID: Final = "role:cluster-admin"
INFRA_ADMIN_ID: Final = "role:infrastructure-admin"
WORKLOAD_ADMIN_PREFIX: Final = "role:workload-admin:"

Status = Literal["plaintext", "sealed", "no"]


# --- options --------------------------------------------------------------------------------


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
    tee_runtime_classes: tuple[str, ...] = COCO_RUNTIME_CLASSES
    # The cluster's nodes and control plane run in confidential VMs (Confidential Clusters):
    # the infrastructure admin reaches nothing inside the cluster.
    confidential_cluster: bool = False
    broker: BrokerModel = field(default_factory=BrokerModel)
    # None: every namespace that holds a workload secret, except kube-system and friends.
    workload_namespaces: tuple[str, ...] | None = None


# --- results --------------------------------------------------------------------------------


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
