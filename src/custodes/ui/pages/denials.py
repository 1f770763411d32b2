"""A denial's page (the token's claims and the resource policy that refused them) and the
test of a policy draft on a denial's recorded claims."""

from __future__ import annotations

from dataclasses import dataclass, field

from custodes.audit.entry import AuditEntry, AuditKind
from custodes.errors import CustodesError, NotFound
from custodes.kbs.broker import RESOURCE_POLICY_ID
from custodes.protocol.resource import ResourcePath
from custodes.types.json import Json, JsonObject
from custodes.ui.pages.common import (
    MAX_DRAFT_CHARS,
    Tenant,
    UiInputError,
    verified_entry,
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
    verified_entry(t, entry.seq)
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
    (current, or a draft) decides on the denied resource. Nothing is stored or activated.

    Both run as the broker runs them, in worker processes under the ``[limits]
    policy_seconds`` budget (a draft that computes for minutes is stopped): call this from a
    worker thread."""
    from custodes.attestation.appraisal import appraise
    from custodes.attestation.ear import SUBMODS
    from custodes.policy.release import evaluate_resource
    from custodes.policy.runner import Budgeted

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
    runner = Budgeted(t.broker.config.limits.policy_seconds)
    # What the broker's policies see: every unexpired value, by id.
    values = t.services.rvps.snapshot()
    submods: list[tuple[str, str, dict[str, int], list[JsonObject]]] = []
    claims: JsonObject = {"custodes.tenant": t.stream}
    ear: JsonObject = {}
    try:
        for name, annotated in recorded.items():
            if not isinstance(annotated, dict):
                continue
            result = appraise(att_policy, annotated, values, runner=runner)
            failed = [c.to_json() for cs in result.failed.values() for c in cs]
            submods.append((name, str(result.status), dict(result.vector), failed))
            ear[name] = result.submodule(annotated, None).to_json()
        claims[SUBMODS] = ear
        resource = ResourcePath.parse(str(view.denial.get("resource", "")))
        decided = evaluate_resource(
            res_policy, claims, resource, "recorded evidence", runner=runner
        )
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
