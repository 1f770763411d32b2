"""Reference values that would let a piece of evidence pass a policy (trust on first use).

The policy is traced (:mod:`custodes.policy.trace`) on the evidence, round by round. A failed
statement that reads exactly one reference value and compares it with claims gets, as
candidates, the values those claims had while the policy ran, each as a list (``[v]``, or
the current list with ``v`` added) and as the value itself: the list first for membership and
calls (``accepted(v, "id")``), the value first for comparisons (``==``, ``>=``). A candidate is
kept only when evaluating the policy with it lets that statement pass. A statement no
candidate fixes (``debug == false``, or one that needs no value of its own, such as
``is_number(minimum)`` before the comparison that uses ``minimum``) is relaxed to look past
it. So the ids are those the policy asked for and the values those the evidence had: nothing
is read from the policy's text, and every value is checked by evaluation.

The result copies the judged machine's own claims: registering it means trusting that
machine. Callers show it as a proposal and never apply it themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Final

from custodes.policy.trace import Run, Statement, failures, program_of, reads, run
from custodes.rvps.messages import query_id
from custodes.types.json import Json

MAX_ROUNDS: Final = 16
MAX_TRIALS: Final = 256


def _forms(statement: Statement, current: Json, value: Json) -> list[Json]:
    listed = [*current, value] if isinstance(current, list) and value not in current else [value]
    if statement.expr == "BoolExpr":
        return [value, listed]
    return [listed, value]


def suggest(
    policy: str,
    rules: Sequence[str],
    *,
    input: Json,
    reference_values: Mapping[str, Json],
    data: Json | None = None,
) -> dict[str, Json]:
    """``{id: value}``: the reference values to register (only those that change) so that
    the conditions of ``rules`` that reference values decide pass on ``input``.
    ``TraceUnavailable`` when the policy cannot be traced."""
    program = program_of(policy)
    chosen: dict[str, Json] = {}

    def query(name: Json) -> Json:
        rv_id = query_id(name)
        if rv_id is None:
            return None
        if rv_id in chosen:
            return copy.deepcopy(chosen[rv_id])
        return copy.deepcopy(reference_values.get(rv_id))

    builtins = {"query_reference_value": (1, query)}
    relaxed: set[int] = set()
    # Relaxed statements that read one reference value but compared it with no claim
    # (``is_number(minimum)``): their candidates come from the later statements of the same
    # body that read the same value (``input.sample.platform_version.minor >= minimum``).
    pending: dict[int, tuple[str, Json]] = {}
    trials = 0

    def evaluate(extra: Mapping[str, Json] | None = None, without: int | None = None) -> Run:
        nonlocal trials
        trials += 1
        saved = dict(chosen)
        chosen.update(extra or {})
        try:
            return run(
                program,
                rules,
                input=input,
                data=data,
                builtins=builtins,
                relaxed=frozenset(relaxed - {without}),
            )
        finally:
            chosen.clear()
            chosen.update(saved)

    def fix(s: Statement, rv_id: str, current: Json, values: list[Json], unrelax: bool) -> bool:
        for value in values:
            for form in _forms(s, current, value):
                if trials >= MAX_TRIALS:
                    return False
                if s.id in evaluate({rv_id: form}, s.id if unrelax else None).passed:
                    chosen[rv_id] = form
                    return True
        return False

    for _ in range(MAX_ROUNDS):
        progress = False
        result = evaluate()
        for sid, (rv_id, current) in list(pending.items()):
            s = program.statements[sid]
            later = [t for t in program.bodies[s.body].statements if t.id > sid]
            values: list[Json] = []
            for t in later:
                rvs, _, compared = reads(program, result, t, input=input, data=data)
                if rv_id in rvs:
                    values.extend(v for _, vs in compared for v in vs if v not in values)
            if fix(s, rv_id, current, values, unrelax=True):
                relaxed.discard(sid)
                del pending[sid]
                progress = True
        if progress:
            continue
        for f in failures(program, result, rules, input=input, data=data):
            s = f.statement
            if s.id in relaxed:
                continue
            fixed = False
            if len(f.reference_values) == 1:
                ((rv_id, current),) = f.reference_values.items()
                values = [v for _, vs in f.compared for v in vs]
                fixed = fix(s, rv_id, current, values, unrelax=False)
                if not fixed and not f.compared and f.relax:
                    pending[s.id] = (rv_id, current)
            if fixed:
                progress = True
            elif f.relax:
                relaxed.add(s.id)
                progress = True
        if not progress or trials >= MAX_TRIALS:
            break
    return {k: v for k, v in sorted(chosen.items()) if reference_values.get(k) != v}
