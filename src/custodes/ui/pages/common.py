"""What every dashboard page needs: the request's view of a tenant (:class:`Tenant`), the
error a bad form or query value raises, the limits on what a page reads and shows, and the
verified audit entries and policy stores that several pages read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from custodes.audit.entry import AuditEntry
from custodes.errors import CustodesError, NotFound
from custodes.kbs.broker import Broker, TenantServices
from custodes.policy.store import PolicyStore
from custodes.types.json import Json
from custodes.ui.auth import UiSession
from custodes.ui.digest import Digests, StreamDigest

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


def now_ms(broker: Broker) -> int:
    return int(broker.clock.now() * 1000)


def short_json(value: Json) -> str:
    """``value`` as JSON, cut to a table cell's worth (the full claims are on the entry's
    page)."""
    return _shown(value)


def _shown(value: Json) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= SHOWN_JSON_CHARS else text[: SHOWN_JSON_CHARS - 1] + "…"


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verified_entry(t: Tenant, seq: int) -> AuditEntry:
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


def policy_stores(s: TenantServices) -> dict[str, PolicyStore]:
    return {"attestation": s.attestation_policies, "resource": s.resource_policies}
