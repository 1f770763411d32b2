"""What each dashboard page shows, read from the broker's own services and audit stream.

Handlers (:mod:`custodes.ui.routes`) stay thin: they authenticate, call one function here and
render its result. These functions read the tenant's stores (resources' names and sizes,
never their values; policies; reference values) and its verified audit digest
(:mod:`custodes.ui.digest`). The one change the dashboard makes, activating a policy version,
goes through :func:`custodes.kbs.policy_activation.activate_policy`, the function behind
``POST …/resource-policy/<id>/activate``.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from markupsafe import Markup

from custodes.audit.log import AuditEntry, AuditKind, verify_jsonl
from custodes.errors import CustodesError, NotFound, PolicyError
from custodes.kbs.broker import RESOURCE_POLICY_ID, Broker, TenantServices
from custodes.kbs.policy_activation import activate_policy
from custodes.kbs.tenants import DEFAULT_TENANT
from custodes.policy.store import PolicyStore
from custodes.protocol.resource import ResourcePath
from custodes.rvps.messages import ReferenceValue
from custodes.types.json import Json, JsonObject
from custodes.ui import charts
from custodes.ui.auth import UiSession
from custodes.ui.digest import ChainStatus, Digests, Record, StreamDigest

PAGE_SIZE: Final = 50
MAX_DRAFT_CHARS: Final = 64 * 1024
MAX_MATRIX_CHARS: Final = 2 * 1024 * 1024
SHOWN_JSON_CHARS: Final = 240
RESULTS: Final = ("affirming", "warning", "contraindicated", "none", "error", "released", "denied")


class UiInputError(CustodesError):
    """A form or query value the dashboard cannot use (400, shown on the page)."""

    code = "ui-input"


@dataclass(frozen=True, slots=True)
class Tenant:
    """One request's view of a tenant: the broker, the tenant's services, who is asking."""

    broker: Broker
    services: TenantServices
    digests: Digests
    session: UiSession

    @property
    def stream(self) -> str:
        return self.services.tenant

    def digest(self) -> StreamDigest:
        return self.digests.refresh(self.stream)


def _now_ms(broker: Broker) -> int:
    return int(broker.clock.now() * 1000)


def short_json(value: Json) -> str:
    """``value`` as JSON, cut to a table cell's worth (the full claims are on the entry's
    page)."""
    return _shown(value)


def _shown(value: Json) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= SHOWN_JSON_CHARS else text[: SHOWN_JSON_CHARS - 1] + "…"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                value=_shown(rv.value),
                expiration=str(rv.to_stored_json()["expiration"]),
                expired=rv.expired(now),
                days_left=(rv.expiration - now).total_seconds() / 86400,
                registered_by=change.actor if change else "(before the audit log's start)",
                registered_at=change.time if change else "",
            )
        )
    rows.sort(key=lambda r: r.days_left)
    return rows


# --- overview -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overview:
    chain: ChainStatus
    window: charts.Window
    chart: Markup
    buckets: list[charts.Bucket]
    tees: list[tuple[str, int, str]]
    expiries: list[RvRow]
    kinds: dict[str, int]
    resources: int
    policies: dict[str, str]


def overview(t: Tenant, window_name: str) -> Overview:
    window = charts.WINDOWS.get(window_name)
    if window is None:
        raise UiInputError(f"window must be one of {', '.join(charts.WINDOWS)}")
    digest = t.digest()
    with digest.lock:
        chain = digest.status()
        data = charts.buckets(digest.minutes, window, _now_ms(t.broker))
        tees = sorted(
            ((tee, n, digest.tee_last.get(tee, "")) for tee, n in digest.tees.items()),
            key=lambda x: -x[1],
        )
        kinds = dict(digest.kinds)
    policies = {}
    for kind, store in _stores(t.services).items():
        for policy_id in store.list():
            version = store.active_version(policy_id)
            policies[f"{kind}/{policy_id}"] = f"version {version}" if version else "unversioned"
    return Overview(
        chain=chain,
        window=window,
        chart=charts.activity_svg(data, window),
        buckets=data,
        tees=tees,
        expiries=reference_values(t)[:5],
        kinds=kinds,
        resources=len(t.services.resources.list()),
        policies=policies,
    )


# --- attestations, releases, denials ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    kind: str = ""
    tee: str = ""
    result: str = ""
    workload: str = ""
    since: str = ""
    until: str = ""
    page: int = 0

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        kind = query.get("kind", "")
        if kind not in ("", "attestation", "release", "denial"):
            raise UiInputError("kind must be attestation, release or denial")
        result = query.get("result", "")
        if result and result not in RESULTS:
            raise UiInputError(f"result must be one of {', '.join(RESULTS)}")
        page_text = query.get("page", "0") or "0"
        if not page_text.isascii() or not page_text.isdigit() or len(page_text) > 6:
            raise UiInputError("page must be a number")
        for name in ("since", "until"):
            if query.get(name):
                _minute_ms(query[name], name)
        return cls(
            kind=kind,
            tee=query.get("tee", "")[:32],
            result=result,
            workload=query.get("workload", "")[:256],
            since=query.get("since", ""),
            until=query.get("until", ""),
            page=int(page_text),
        )

    def matches(self, r: Record, since_ms: int | None, until_ms: int | None) -> bool:
        return (
            (not self.kind or str(r.kind) == self.kind)
            and (not self.tee or r.tee == self.tee)
            and (not self.result or r.result == self.result)
            and (
                not self.workload
                or self.workload in r.resource
                or self.workload in r.token_id
                or self.workload in r.correlation_id
            )
            and (since_ms is None or r.time_ms >= since_ms)
            and (until_ms is None or r.time_ms < until_ms)
        )


def _minute_ms(text: str, name: str) -> int:
    """A ``datetime-local`` value (``2026-12-07T07:30``, taken as UTC) in ms."""
    try:
        when = datetime.strptime(text[:16], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
    except ValueError as e:
        raise UiInputError(f"{name} must be a date and time (YYYY-MM-DDTHH:MM, UTC)") from e
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Activity:
    rows: list[Record]
    total: int
    filters: Filters
    tees: list[str]
    more: bool


def activity(t: Tenant, filters: Filters, kinds: tuple[str, ...]) -> Activity:
    """Records of ``kinds``, newest first, filtered and paged."""
    since = _minute_ms(filters.since, "since") if filters.since else None
    until = _minute_ms(filters.until, "until") if filters.until else None
    digest = t.digest()
    with digest.lock:
        matching = [
            r
            for r in reversed(digest.records)
            if str(r.kind) in kinds and filters.matches(r, since, until)
        ]
        tees = sorted(digest.tees)
    start = filters.page * PAGE_SIZE
    return Activity(
        rows=matching[start : start + PAGE_SIZE],
        total=len(matching),
        filters=filters,
        tees=tees,
        more=len(matching) > start + PAGE_SIZE,
    )


@dataclass(frozen=True, slots=True)
class EntryView:
    entry: AuditEntry
    vectors: dict[str, Json]
    evidence: str
    linked: AuditEntry | None


def _verified_entry(t: Tenant, seq: int) -> AuditEntry:
    """Entry ``seq`` if the digest has verified it (the page shows nothing unverified)."""
    digest = t.digest()
    with digest.lock:
        verified = digest.verified
    if not 0 <= seq < verified:
        raise NotFound(f"no verified audit entry {seq}")
    log = t.broker.audit
    entry = log.entry(t.stream, seq) if log is not None else None
    if entry is None:
        raise NotFound(f"no audit entry {seq}")
    return entry


def entry_view(t: Tenant, seq: int) -> EntryView:
    """One attestation, release or denial with its trust vectors and recorded claims."""
    entry = _verified_entry(t, seq)
    if entry.kind not in (AuditKind.ATTESTATION, AuditKind.RELEASE, AuditKind.DENIAL):
        raise NotFound(f"audit entry {seq} is not an attestation, release or denial")
    linked = None
    token_id = entry.event.get("token_id")
    log = t.broker.audit
    if entry.kind is not AuditKind.ATTESTATION and isinstance(token_id, str) and log:
        linked = log.get_by_correlation_id(t.stream, token_id)
    # A release or denial shows the appraisal of the token it was decided on.
    event = linked.event if linked is not None else entry.event
    vectors = event.get("trust_vectors")
    evidence = event.get("annotated_evidence")
    return EntryView(
        entry=entry,
        vectors=vectors if isinstance(vectors, dict) else {},
        evidence=json.dumps(evidence, indent=2, sort_keys=True) if evidence else "",
        linked=linked,
    )


@dataclass(frozen=True, slots=True)
class DenialView:
    entry: AuditEntry
    denial: JsonObject
    attestation: AuditEntry | None
    failed: list[JsonObject]
    attestation_failed: list[tuple[str, str, Json, list[JsonObject]]]


def _objects(value: Json) -> list[JsonObject]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def denial_view(t: Tenant, correlation_id: str) -> DenialView:
    """A denial and its attestation: the failed conditions, claims and reference values of
    both decisions, side by side."""
    log = t.broker.audit
    entry = log.get_by_correlation_id(t.stream, correlation_id) if log else None
    if log is None or entry is None or entry.kind is not AuditKind.DENIAL:
        raise NotFound(f"no denial with correlation id {correlation_id[:64]}")
    _verified_entry(t, entry.seq)
    token_id = entry.event.get("token_id")
    attestation = (
        log.get_by_correlation_id(t.stream, token_id) if isinstance(token_id, str) else None
    )
    rows: list[tuple[str, str, Json, list[JsonObject]]] = []
    explanation = attestation.event.get("explanation") if attestation else None
    if isinstance(explanation, dict):
        for submod, claims in explanation.items():
            if isinstance(claims, dict):
                for claim, detail in claims.items():
                    if isinstance(detail, dict):
                        rows.append(
                            (submod, claim, detail.get("value"), _objects(detail.get("failed")))
                        )
    return DenialView(
        entry=entry,
        denial=entry.event,
        attestation=attestation,
        failed=_objects(entry.event.get("failed")),
        attestation_failed=rows,
    )


@dataclass(frozen=True, slots=True)
class TestResult:
    which: str
    submods: list[tuple[str, str, dict[str, int], list[JsonObject]]]
    decision: str
    failed: list[JsonObject]
    notes: list[str] = field(default_factory=list)


def test_denial(
    t: Tenant, correlation_id: str, attestation_draft: str, resource_draft: str
) -> TestResult:
    """Replay a denied request's recorded evidence: the attestation policy (current, or a
    draft) appraises it with the tenant's current reference values, then the resource policy
    (current, or a draft) decides on the denied resource. Nothing is stored or activated."""
    from custodes.attestation.appraisal import appraise
    from custodes.policy.release import evaluate_resource

    if len(attestation_draft) > MAX_DRAFT_CHARS or len(resource_draft) > MAX_DRAFT_CHARS:
        raise UiInputError(f"a draft policy is at most {MAX_DRAFT_CHARS} characters")
    if (attestation_draft or resource_draft) and not t.session.can_change:
        raise UiInputError(
            "only an admin may test a draft policy; an auditor tests the current one"
        )
    view = denial_view(t, correlation_id)
    if view.attestation is None:
        raise UiInputError("the attestation behind this denial is not in the audit log")
    recorded = view.attestation.event.get("annotated_evidence")
    if not isinstance(recorded, dict) or not recorded:
        raise UiInputError("the attestation was recorded without its evidence (too large)")
    policy_id = view.attestation.event.get("policy_id")
    att_policy = attestation_draft or t.services.attestation_policies.get(
        policy_id if isinstance(policy_id, str) else "default_cpu"
    )
    res_policy = resource_draft or t.services.resource_policies.get(RESOURCE_POLICY_ID)
    if not att_policy or not res_policy:
        raise UiInputError("no active policy to test against")
    rvs = {name: t.services.rvps.query(name) for name in t.services.rvps.list()}
    values = {k: v for k, v in rvs.items() if v is not None}
    submods: list[tuple[str, str, dict[str, int], list[JsonObject]]] = []
    claims: JsonObject = {"custodes.tenant": t.stream}
    ear: JsonObject = {}
    try:
        for name, annotated in recorded.items():
            if not isinstance(annotated, dict):
                continue
            result = appraise(att_policy, annotated, values)
            failed = [c.to_json() for cs in result.failed.values() for c in cs]
            submods.append((name, str(result.status), dict(result.vector), failed))
            ear[name] = {
                "ear.status": str(result.status),
                "ear.trustworthiness-vector": dict(result.vector),
                "ear.veraison.annotated-evidence": annotated,
                **result.extensions,
            }
        claims["submods"] = ear
        resource = ResourcePath.parse(str(view.denial.get("resource", "")))
        decided = evaluate_resource(res_policy, claims, resource, "recorded evidence")
    except CustodesError as e:
        raise UiInputError(f"the policy could not be evaluated: {e}") from e
    which = (
        " and ".join(
            w
            for w, d in (
                ("draft attestation policy", attestation_draft),
                ("draft resource policy", resource_draft),
            )
            if d
        )
        or "current policies"
    )
    return TestResult(
        which=which,
        submods=submods,
        decision="allow" if decided.allowed else "deny",
        failed=[c.to_json() for c in decided.failed],
        notes=[
            "the recorded evidence is replayed with today's reference values; nothing was activated"
        ],
    )


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
        rows.append(ResourceRow(path, info.size, _iso(info.updated), version, released))
    return rows


# --- policies -------------------------------------------------------------------------------


def _stores(s: TenantServices) -> dict[str, PolicyStore]:
    return {"attestation": s.attestation_policies, "resource": s.resource_policies}


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
    for kind, store in _stores(t.services).items():
        for policy_id in store.list():
            out.append(
                (kind, policy_id, store.active_version(policy_id), len(store.versions(policy_id)))
            )
    return out


def _store(t: Tenant, kind: str) -> PolicyStore:
    store = _stores(t.services).get(kind)
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


# --- the audit stream -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Export:
    body: bytes
    filename: str
    summary: str


def export(t: Tenant) -> Export:
    """The tenant's audit stream ending with a fresh signed checkpoint (naming who
    exported, as ``custodes admin audit export``), verified before it is handed over."""
    log = t.broker.audit
    if log is None:
        raise NotFound("this broker keeps no audit log")
    buffer = io.BytesIO()
    count = log.export(t.stream, buffer, actor=t.session.subject)
    body = buffer.getvalue()
    report = verify_jsonl(io.BytesIO(body), log.public_keys(), stream=t.stream)
    if not report.ok:
        raise UiInputError(
            f"the export does not verify (entry {report.first_bad_seq}: {report.reason}); "
            "it is not offered for download"
        )
    tag = t.stream if t.stream != DEFAULT_TENANT else "default"
    return Export(
        body=body,
        filename=f"audit-{tag}-{count}.jsonl",
        summary=f"{count} entries, chain and signatures good, ends at checkpoint {count - 1}",
    )


# --- the operator ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantRow:
    id: str
    status: str
    created: str
    identities: list[tuple[str, str, str]]  # subject, role, key fingerprint


def operator_tenants(broker: Broker) -> list[TenantRow]:
    """Tenants, their status and identities (subjects, roles, key fingerprints): what the
    operator registered, nothing from inside a tenant."""
    from cryptography.hazmat.primitives import serialization

    rows = []
    for tenant_id in broker.registry.list():
        try:
            tenant = broker.registry.get(tenant_id)
        except CustodesError:
            continue
        identities = []
        for i in tenant.identities:
            der = i.public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            identities.append((i.subject, i.role.value, hashlib.sha256(der).hexdigest()[:16]))
        rows.append(TenantRow(tenant.id, tenant.status.value, _iso(tenant.created), identities))
    return rows
