"""The pages over the tenant's stores: reference values (with expiry and who registered them),
resources (names and sizes, never their values), policies (versions, diffs, activation) and
the access-matrix picture."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from custodes.errors import CustodesError, NotFound, PolicyError
from custodes.kbs.policy_activation import activate_policy
from custodes.policy.store import PolicyStore
from custodes.protocol.resource import ResourcePath
from custodes.rvps.messages import ReferenceValue
from custodes.types.json import Json
from custodes.ui import charts
from custodes.ui.pages.common import (
    MAX_MATRIX_CHARS,
    Tenant,
    UiInputError,
    iso_time,
    policy_stores,
    short_json,
)

# --- reference values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RvRow:
    name: str
    value: str
    expiration: str
    expired: bool
    days_left: float
    registered_by: str
    registered_at: str


def reference_values(t: Tenant) -> list[RvRow]:
    """Every reference value with its expiry and who registered it (soonest expiry first)."""
    digest = t.digest()
    now = datetime.fromtimestamp(t.broker.clock.now(), UTC)
    rows: list[RvRow] = []
    for name in t.services.rvps.list():
        try:
            rv: ReferenceValue = t.services.rvps.get(name)
        except CustodesError:
            continue
        with digest.lock:
            change = digest.rv_changes.get(name)
        rows.append(
            RvRow(
                name=name,
                value=short_json(rv.value),
                expiration=str(rv.to_stored_json()["expiration"]),
                expired=rv.expired(now),
                days_left=(rv.expiration - now).total_seconds() / 86400,
                registered_by=change.actor if change else "(before the audit log's start)",
                registered_at=change.time if change else "",
            )
        )
    rows.sort(key=lambda r: r.days_left)
    return rows


# --- resources ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceRow:
    path: str
    size: int
    updated: str
    version: int
    last_release: str


def resources(t: Tenant) -> list[ResourceRow]:
    """Names, sizes, versions (stores recorded in the audit log) and last release; never
    a value."""
    digest = t.digest()
    rows = []
    for path in t.services.resources.list():
        try:
            info = t.services.resources.info(ResourcePath.parse(path))
        except CustodesError:
            continue
        with digest.lock:
            version = digest.resource_puts.get(path, 0)
            released = digest.last_release.get(path, "")
        rows.append(ResourceRow(path, info.size, iso_time(info.updated), version, released))
    return rows


# --- policies -------------------------------------------------------------------------------


ATTRS: Final = {"attestation": "attestation_policies", "resource": "resource_policies"}


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    active: bool
    actor: str
    time: str
    sha256: str


@dataclass(frozen=True, slots=True)
class PolicyView:
    kind: str
    policy_id: str
    versions: list[VersionRow]
    shown: int
    text: str
    diff: list[tuple[str, str]]
    diff_from: int | None
    can_rollback: bool
    activations: list[tuple[str, str, int]]  # when, who, version; newest first


def policy_list(t: Tenant) -> list[tuple[str, str, int | None, int]]:
    """(kind, id, active version, number of versions) of every policy."""
    out = []
    for kind, store in policy_stores(t.services).items():
        for policy_id in store.list():
            out.append(
                (kind, policy_id, store.active_version(policy_id), len(store.versions(policy_id)))
            )
    return out


def _store(t: Tenant, kind: str) -> PolicyStore:
    store = policy_stores(t.services).get(kind)
    if store is None:
        raise NotFound(f"no policy kind {kind[:20]!r}")
    return store


def policy_view(
    t: Tenant, kind: str, policy_id: str, version: int | None, diff_from: int | None
) -> PolicyView:
    store = _store(t, kind)
    try:
        versions = store.versions(policy_id)
    except PolicyError as e:
        raise NotFound(str(e)) from e
    if not versions:
        raise NotFound(f"no policy {policy_id}")
    active = next((v for v, a in versions if a), versions[-1][0])
    shown = version if version is not None else active
    text = store.get_version(policy_id, shown)
    if text is None:
        raise NotFound(f"policy {policy_id} has no version {shown}")
    digest = t.digest()
    with digest.lock:
        activations = [
            (c.time, c.actor, v) for c, v in reversed(digest.activations.get((kind, policy_id), []))
        ]
    rows = []
    for v, a in versions:
        with digest.lock:
            change = digest.policy_versions.get((kind, policy_id, v))
        body = store.get_version(policy_id, v) or ""
        rows.append(
            VersionRow(
                v,
                a,
                change.actor if change else "(shipped default or before the audit log)",
                change.time if change else "",
                hashlib.sha256(body.encode()).hexdigest()[:16],
            )
        )
    diff: list[tuple[str, str]] = []
    if diff_from is not None:
        old = store.get_version(policy_id, diff_from)
        if old is None:
            raise NotFound(f"policy {policy_id} has no version {diff_from}")
        for line in difflib.unified_diff(
            old.splitlines(),
            text.splitlines(),
            f"version {diff_from}",
            f"version {shown}",
            lineterm="",
        ):
            cls = "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx"
            if line.startswith(("+++", "---", "@@")):
                cls = "hunk"
            diff.append((cls, line))
    return PolicyView(
        kind=kind,
        policy_id=policy_id,
        versions=rows,
        shown=shown,
        text=text,
        diff=diff,
        diff_from=diff_from,
        can_rollback=any(v < active for v, _ in versions),
        activations=activations,
    )


def activate(t: Tenant, kind: str, policy_id: str, version: int | None) -> int:
    """Activate ``version`` (``None``: roll back to the version before the active one), as
    the admin API does; the version now active."""
    store = _store(t, kind)
    versions = store.versions(policy_id)
    if version is None:
        active = next((v for v, a in versions if a), None)
        earlier = [v for v, _ in versions if active is not None and v < active]
        if not earlier:
            raise UiInputError(f"{policy_id} has no version before the active one")
        version = max(earlier)
    if version not in {v for v, _ in versions}:
        raise NotFound(f"policy {policy_id} has no version {version}")
    activate_policy(t.broker.audit, t.services, t.session.subject, ATTRS[kind], policy_id, version)
    return version


# --- the access matrix ----------------------------------------------------------------------


def matrix_picture(text: str, title: str) -> charts.MatrixPicture:
    """The picture of ``custodes audit access-matrix -o json`` output (computed on the
    admin's machine: the cluster dump never reaches the broker)."""
    if len(text) > MAX_MATRIX_CHARS:
        raise UiInputError(f"{title}: at most {MAX_MATRIX_CHARS} characters")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UiInputError(f"{title}: not JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != "custodes-access-matrix/1":
        raise UiInputError(
            f"{title}: not the output of `custodes audit access-matrix -o json` "
            "(format custodes-access-matrix/1)"
        )
    principals = _named(doc.get("principals"), "name", title)
    secrets = _named(doc.get("secrets"), "id", title)
    p_index = {pid: i for i, (pid, _) in enumerate(principals)}
    s_index = {sid: j for j, (sid, _) in enumerate(secrets)}
    cells: dict[tuple[int, int], str] = {}
    labels: dict[tuple[int, int], str] = {}
    raw_cells = doc.get("cells")
    if not isinstance(raw_cells, list):
        raise UiInputError(f"{title}: cells is not a list")
    for c in raw_cells:
        if not isinstance(c, dict):
            raise UiInputError(f"{title}: a cell is not an object")
        i, j = p_index.get(str(c.get("principal"))), s_index.get(str(c.get("secret")))
        status = c.get("status")
        if i is None or j is None or status not in ("plaintext", "sealed", "no"):
            raise UiInputError(f"{title}: a cell names an unknown row, column or status")
        cells[(i, j)] = str(status)
        labels[(i, j)] = str(c.get("label", status))[:200]
    return charts.MatrixPicture(
        title=title,
        principals=tuple(name for _, name in principals),
        secrets=tuple(sid for sid, _ in secrets),
        cells=cells,
        labels=labels,
    )


def _named(value: Json, label: str, title: str) -> list[tuple[str, str]]:
    if not isinstance(value, list) or len(value) > 2000:
        raise UiInputError(f"{title}: expected a list of at most 2000 rows and columns")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise UiInputError(f"{title}: a row or column has no id")
        out.append((str(item["id"]), str(item.get(label, item["id"]))))
    return out
