"""Why a policy decided what it did: the failed condition, the claims it read and the
reference values it was compared with.

The policy is evaluated once more with regorus's coverage on, recording every
``query_reference_value`` call. In each rule body of the rules asked about, the condition that
failed is the last line evaluated before an unevaluated one (Rego stops a body at its first
false expression), or the body's last line when the body ran to its end and the rule still
did not take its value. Lines that only test which TEE the evidence is from (``input.snp``) are
skipped: they fail for every other TEE by design. This costs one extra evaluation and runs
only when an appraisal is not affirming or a release is denied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regorus

from custodes.types.json import Json, JsonObject

_RULE_HEAD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\b[^{]*\bif\s*\{\s*$")
_INPUT_PATH = re.compile(r"\binput((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\"[^\"]*\"\])+)")
_DATA_PATH = re.compile(r"\bdata((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\"[^\"]*\"\])+)")
_RV_CALL = re.compile(r"query_reference_value\(\s*\"([^\"]+)\"\s*\)")
_GUARD = re.compile(
    r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*\s*:=\s*)?input(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\"[^\"]+\"\])\s*$"
)
_STRING = re.compile(r"\"([^\"\\]+)\"")
MAX_CONDITIONS = 16


@dataclass(frozen=True, slots=True)
class FailedCondition:
    rule: str
    line: int
    condition: str
    claims: JsonObject
    reference_values: JsonObject

    def to_json(self) -> JsonObject:
        return {
            "rule": self.rule,
            "line": self.line,
            "condition": self.condition,
            "claims": self.claims,
            "reference_values": self.reference_values,
        }


def _resolve(obj: Json, path: str) -> Json:
    for part in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\"([^\"]*)\"\]", path):
        key = part[0] or part[1]
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _blocks(lines: list[str]) -> list[tuple[str, int, int]]:
    """(rule name, first body line, last body line), 1-based, for ``name ... if {`` bodies."""
    blocks = []
    i = 0
    while i < len(lines):
        m = _RULE_HEAD.match(lines[i])
        if not m:
            i += 1
            continue
        depth, j = 1, i + 1
        while j < len(lines) and depth:
            depth += lines[j].count("{") - lines[j].count("}")
            j += 1
        blocks.append((m.group(1), i + 2, j - 1))
        i = j
    return blocks


def explain(
    policy: str,
    rules: Sequence[str],
    *,
    input: Json,
    data: Json | None = None,
    builtins: Mapping[str, tuple[int, Callable[..., Json]]] | None = None,
) -> list[FailedCondition]:
    """The failed conditions of ``rules`` (rule names in package ``policy``)."""
    recorded: dict[str, Json] = {}
    engine = regorus.Engine()
    engine.add_policy("policy.rego", policy)
    for name, (arity, function) in (builtins or {}).items():
        if name == "query_reference_value":

            def record(rv_id: Any, _f: Callable[..., Json] = function) -> Json:
                value = _f(rv_id)
                if isinstance(rv_id, str):
                    recorded[rv_id] = value
                return value

            engine.add_extension(name, arity, record)
        else:
            engine.add_extension(name, arity, function)
    if data is not None:
        engine.add_data(data)
    engine.set_input(input)
    engine.set_enable_coverage(True)
    for rule in rules:
        try:
            engine.eval_rule(f"data.policy.{rule}")
        except RuntimeError:
            continue  # the policy has no such rule
    report = json.loads(engine.get_coverage_report_as_json())
    files = report.get("files", [])
    if not files:
        return []
    covered = set(files[0].get("covered", []))
    not_covered = set(files[0].get("not_covered", []))
    lines = policy.splitlines()
    failed: list[FailedCondition] = []
    for name, first, last in _blocks(lines):
        if name not in rules:
            continue
        body = [
            n
            for n in range(first, last + 1)
            if lines[n - 1].strip() and not lines[n - 1].strip().startswith("#")
        ]
        ran = [n for n in body if n in covered]
        if not ran:
            continue
        # Stopped before the end: the last line evaluated was false. Ran to the end: the rule
        # still did not take this body's value (callers ask only about rules that failed), so
        # the last line was false.
        stopped_early = any(n in not_covered for n in body if n > ran[-1])
        if not stopped_early and ran[-1] != body[-1]:
            continue
        text = lines[ran[-1] - 1].strip()
        if _GUARD.match(text):
            continue
        claims = {f"input{p}": _resolve(input, p) for p in _INPUT_PATH.findall(text)}
        if data is not None:
            claims.update(
                {
                    f"data{p}": _resolve(data, p)
                    for p in _DATA_PATH.findall(text)
                    if not p.startswith(".policy")
                }
            )
        # Direct calls, and ids passed to a helper function that queried them.
        ids = set(_RV_CALL.findall(text)) | {s for s in _STRING.findall(text) if s in recorded}
        rvs = {rv: recorded.get(rv) for rv in sorted(ids)}
        if not rvs and all(v is None for v in claims.values()):
            continue  # a condition on evidence this TEE does not have
        failed.append(FailedCondition(name, ran[-1], text, claims, rvs))
        if len(failed) >= MAX_CONDITIONS:
            break
    return failed
