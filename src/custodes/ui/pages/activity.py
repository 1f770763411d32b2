"""The overview page, the attestation/release/denial lists with their filters, and one audit
entry's page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup

from custodes.audit.entry import AuditEntry, AuditKind
from custodes.errors import NotFound
from custodes.types.json import Json
from custodes.ui import charts
from custodes.ui.digest import ChainStatus, Record
from custodes.ui.pages.common import (
    PAGE_SIZE,
    RESULTS,
    Tenant,
    UiInputError,
    now_ms,
    policy_stores,
    verified_entry,
)
from custodes.ui.pages.stores import RvRow, reference_values

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
        data = charts.buckets(digest.minutes, window, now_ms(t.broker))
        tees = sorted(
            ((tee, n, digest.tee_last.get(tee, "")) for tee, n in digest.tees.items()),
            key=lambda x: -x[1],
        )
        kinds = dict(digest.kinds)
    policies = {}
    for kind, store in policy_stores(t.services).items():
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


def entry_view(t: Tenant, seq: int) -> EntryView:
    """One attestation, release or denial with its trust vectors and recorded claims."""
    entry = verified_entry(t, seq)
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
