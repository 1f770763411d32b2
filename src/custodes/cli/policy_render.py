"""What ``custodes policy test`` prints: the candidate's decision as JSON (``-o json``) and as
text, with the trust vector's AR4SI meanings, the failed conditions and the reference values
consulted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Final

from custodes.attestation.ear import meaning, tier_of
from custodes.policy.dry_run import AttestationResult, Recorded
from custodes.policy.engine import UNDEFINED
from custodes.policy.explain import FailedCondition
from custodes.policy.release import ResourceResult
from custodes.protocol.appraisal import appraisal_summary
from custodes.types.json import Json, JsonObject

_TEXT_VALUE_CHARS: Final = 160


def _short(value: Json) -> str:
    text = json.dumps(value, sort_keys=True)
    if len(text) > _TEXT_VALUE_CHARS:
        return text[: _TEXT_VALUE_CHARS - 1] + "…"
    return text


def _recorded_vector(recorded: Recorded | None, submod: str) -> dict[str, int]:
    vector = recorded.vectors.get(submod) if recorded is not None else None
    if not isinstance(vector, dict):
        return {}
    return {k: v for k, v in vector.items() if isinstance(v, int) and not isinstance(v, bool)}


def _policy_json(policy_path: Path, policy: str) -> JsonObject:
    return {"path": str(policy_path), "sha256": _sha256(policy)}


def _policy_line(policy_path: Path, policy: str) -> str:
    return f"candidate policy: {policy_path} (sha256 {_sha256(policy)})"


def _sha256(policy: str) -> str:
    """The candidate as both renderings name it (with its path): the digest of its text."""
    return hashlib.sha256(policy.encode()).hexdigest()


def attestation_json(policy_path: Path, policy: str, result: AttestationResult) -> JsonObject:
    submods: JsonObject = {}
    for name, a in result.appraisals.items():
        recorded_vector = _recorded_vector(result.source.recorded, name)
        vector: JsonObject = {}
        for claim, value in a.vector.items():
            entry: JsonObject = {
                "value": value,
                "tier": str(tier_of(value)),
                "meaning": meaning(claim, value),
            }
            if claim in recorded_vector:
                entry["recorded"] = recorded_vector[claim]
            vector[claim] = entry
        sub: JsonObject = {
            "status": str(a.status),
            "trust_vector": vector,
            "extensions": dict(a.extensions),
            "failed": {
                claim: [c.to_json() for c in conditions] for claim, conditions in a.failed.items()
            },
            "reference_values_consulted": dict(a.consulted or {}),
        }
        if a.trace_error is not None:
            sub["trace_error"] = a.trace_error
        submods[name] = sub
    report: JsonObject = {
        "kind": "attestation",
        "policy": _policy_json(policy_path, policy),
        "input": result.source.description,
        "decision": str(result.status),
        "refused": result.refused,
        "submods": submods,
        "notes": list(result.source.notes),
        "activated": False,
    }
    recorded = result.source.recorded
    if recorded is not None:
        report["recorded"] = {"status": recorded.status, **recorded.details}
        report["would_change"] = result.would_change
    return report


def _condition_lines(c: FailedCondition, indent: str) -> list[str]:
    where = f"rule {c.rule}" if c.via is None else f"rule {c.rule} via {c.via}"
    lines = [f"{indent}failed condition ({where}, line {c.line}): {c.condition}"]
    for path, value in c.claims.items():
        lines.append(f"{indent}  claim {path} = {_short(value)}")
    for rv, value in c.reference_values.items():
        lines.append(f"{indent}  reference value {rv} = {_short(value)}")
    return lines


def attestation_text(policy_path: Path, policy: str, result: AttestationResult) -> str:
    out = [
        _policy_line(policy_path, policy),
        f"input: {result.source.description}",
        f"decision: {result.status}",
    ]
    for name, a in result.appraisals.items():
        recorded_vector = _recorded_vector(result.source.recorded, name)
        out.append(f"{name}: {a.status}")
        out.append("  trust vector:")
        for claim, value in a.vector.items():
            was = recorded_vector.get(claim, value)
            change = f"  (recorded: {was})" if was != value else ""
            out.append(
                f"    {claim:<18} {value:>4}  {tier_of(value)!s:<16} {meaning(claim, value)}"
                f"{change}"
            )
        for ext_name, ext_value in a.extensions.items():
            out.append(f"  extension {ext_name} = {_short(ext_value)}")
        if a.failed:
            out.append("  why:")
        for claim, conditions in a.failed.items():
            value = a.vector[claim]
            out.append(f"    {claim} = {value}: {meaning(claim, value)}")
            if not conditions and a.trace_error is None:
                out.append(
                    "      the rule kept its default; no failed condition located (none of its "
                    "conditions reads a claim this evidence has or a reference value)"
                )
                absent = [rv for rv, rv_value in (a.consulted or {}).items() if rv_value is None]
                if absent:
                    out.append(
                        f"      reference values the policy read as null: {', '.join(absent)}"
                    )
            for c in conditions:
                out.extend(_condition_lines(c, "      "))
        if a.trace_error is not None:
            out.append(f"  trace unavailable: {a.trace_error}")
        if a.consulted:
            out.append("  reference values consulted:")
            for rv, rv_value in a.consulted.items():
                shown = "null (not provided)" if rv_value is None else _short(rv_value)
                out.append(f"    {rv} = {shown}")
        else:
            out.append("  reference values consulted: none")
    recorded = result.source.recorded
    if recorded is not None:
        version = recorded.details.get("policy_version")
        by = f" (policy version {version})" if version is not None else ""
        out.append(f"recorded by the broker{by}: {recorded.status}")
        verdict = result.would_change
        out.append(f"would change: {verdict}" if verdict else f"would not change: {result.status}")
    out.extend(f"note: {note}" for note in result.source.notes)
    out.append("nothing was activated or sent anywhere")
    return "\n".join(out)


_RESOURCE_NOTE: Final = "token signature and lifetime not checked (an offline test of the policy)"


def resource_json(policy_path: Path, policy: str, result: ResourceResult) -> JsonObject:
    report: JsonObject = {
        "kind": "resource",
        "policy": _policy_json(policy_path, policy),
        "input": result.description,
        "resource": str(result.resource),
        "decision": "allow" if result.allowed else "deny",
        "allow": None if result.allow is UNDEFINED else result.allow,
        "refused": not result.allowed,
        "appraisal": appraisal_summary(result.claims),
        "failed": [c.to_json() for c in result.failed],
        "notes": [_RESOURCE_NOTE],
        "activated": False,
    }
    if result.trace_error is not None:
        report["trace_error"] = result.trace_error
    return report


def resource_text(policy_path: Path, policy: str, result: ResourceResult) -> str:
    out = [
        _policy_line(policy_path, policy),
        f"input: {result.description}",
        f"resource: {result.resource}",
        f"appraisal: {appraisal_summary(result.claims)}",
        f"decision: {'allow' if result.allowed else 'deny'}",
    ]
    if not result.allowed:
        if result.allow is not False:
            shown = "undefined" if result.allow is UNDEFINED else _short(result.allow)
            out.append(f"  (allow is {shown}, not true)")
        if result.trace_error is not None:
            out.append(f"trace unavailable: {result.trace_error}")
        elif not result.failed:
            out.append("why: no failed condition located (allow keeps its default)")
        for c in result.failed:
            out.extend(_condition_lines(c, ""))
    out.append(f"note: {_RESOURCE_NOTE}")
    out.append("nothing was activated or sent anywhere")
    return "\n".join(out)
