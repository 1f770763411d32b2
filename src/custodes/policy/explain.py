"""Why a policy decided what it did: every failed condition, the claims it read and the
reference values it was compared with.

Rego stops a rule body at its first false statement, so one evaluation shows one failed
condition per body. The policy is traced instead (:mod:`custodes.policy.trace`): each round
finds the statement that stopped each body of the rules asked about (and of the helper rules
those statements use), records it, and replaces it by ``true`` for the next round, until no
body stops at a new statement. So the admin sees every condition that fails, for every rule,
in one answer. Statements that only test which TEE the evidence is from (``input.snp``) are
skipped: they fail for every other TEE by design. This runs only when an appraisal is not
affirming or a release is denied, and costs one evaluation per round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from custodes.errors import PolicyError
from custodes.policy.trace import Builtins, TraceUnavailable, failures, program_of, run
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

MAX_CONDITIONS: Final = 64
MAX_ROUNDS: Final = 16


@dataclass(frozen=True, slots=True)
class FailedCondition:
    # The rule asked about (a trust claim such as ``hardware``, or ``allow``) ...
    rule: str
    line: int
    condition: str
    claims: JsonObject
    reference_values: JsonObject
    # ... and the helper rule the condition is in, when it is not in ``rule`` itself.
    via: str | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "rule": self.rule,
            "line": self.line,
            "condition": self.condition,
            "claims": self.claims,
            "reference_values": self.reference_values,
        }
        if self.via is not None:
            out["via"] = self.via
        return out

    @classmethod
    def from_json(cls, obj: Json) -> FailedCondition:
        """The inverse of :meth:`to_json` (a policy worker's answer); ``PolicyError`` for any
        other shape."""
        if (
            not isinstance(obj, dict)
            or not set(obj) <= _FIELDS | {"via"}
            or not _FIELDS <= set(obj)
        ):
            raise PolicyError("a failed condition is not the shape explain gives")
        rule, line, condition = obj["rule"], obj["line"], obj["condition"]
        claims, reference_values, via = obj["claims"], obj["reference_values"], obj.get("via")
        if (
            not isinstance(rule, str)
            or not isinstance(line, int)
            or isinstance(line, bool)
            or not isinstance(condition, str)
            or not isinstance(claims, dict)
            or not isinstance(reference_values, dict)
            or not (via is None or isinstance(via, str))
        ):
            raise PolicyError("a failed condition is not the shape explain gives")
        return cls(rule, line, condition, claims, reference_values, via)


_FIELDS: Final = frozenset({"rule", "line", "condition", "claims", "reference_values"})


def explain(
    policy: str,
    rules: Sequence[str],
    *,
    input: Json,
    data: Json | None = None,
    builtins: Builtins | None = None,
    strict: bool = False,
) -> list[FailedCondition]:
    """Every failed condition of ``rules`` (rule names in package ``policy``), in policy
    order. A policy that cannot be traced gives the conditions found so far (logged), or
    ``TraceUnavailable`` with ``strict``: an explanation must never turn a decision into an
    error."""
    found: dict[int, FailedCondition] = {}
    try:
        _trace(policy, rules, input, data, builtins or {}, found)
    except TraceUnavailable as e:
        if strict:
            raise
        logger.warning("cannot explain the policy decision: %s", e)
    ordered = sorted(found.items())
    return [c for _, c in ordered[:MAX_CONDITIONS]]


def _trace(
    policy: str,
    rules: Sequence[str],
    input: Json,
    data: Json | None,
    builtins: Builtins,
    found: dict[int, FailedCondition],
) -> None:
    program = program_of(policy)
    relaxed: set[int] = set()
    for _ in range(MAX_ROUNDS):
        result = run(
            program, rules, input=input, data=data, builtins=builtins, relaxed=frozenset(relaxed)
        )
        progress = False
        for f in failures(program, result, rules, input=input, data=data):
            s = f.statement
            if f.reportable and s.id not in found:
                via = s.rule if s.rule != f.root else None
                found[s.id] = FailedCondition(
                    f.root, s.line, s.condition, f.claims, f.reference_values, via
                )
            if f.relax and s.id not in relaxed:
                relaxed.add(s.id)
                progress = True
        if not progress or len(found) >= MAX_CONDITIONS:
            break


def reference_value_reader(values: Mapping[str, Json]) -> Builtins:
    """A ``query_reference_value`` builtin over a fixed ``{id: value}`` (null when absent)."""

    def query(name: Json) -> Json:
        return values.get(name) if isinstance(name, str) else None

    return {"query_reference_value": (1, query)}
