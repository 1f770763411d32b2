"""The audit stream's export and the operator's list of tenants."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from custodes.audit.verify import verify_jsonl
from custodes.errors import CustodesError, NotFound
from custodes.kbs.broker import Broker
from custodes.kbs.tenants import DEFAULT_TENANT
from custodes.ui.pages.common import (
    Tenant,
    UiInputError,
    iso_time,
)

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
        rows.append(TenantRow(tenant.id, tenant.status.value, iso_time(tenant.created), identities))
    return rows
