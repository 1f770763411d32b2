"""How a policy is run: in this process, recording every reference value it reads, or in a
worker process under the policy budget (:mod:`custodes.policy.budget`).

The broker runs tenants' policies under the budget, because a policy that computes for
minutes must not hold a thread (or the event loop) for minutes; so does the dashboard's "test
this evidence", which runs drafts inside the broker. ``custodes policy test`` runs a
candidate in its own process, on the author's machine, where it can also report which
reference values the policy read: a worker answers ``query_reference_value`` itself and does
not say what it was asked.

With ``reference_values`` (``{id: value}``) both answer ``query_reference_value`` alike: null
for an unknown or invalid id, as the broker's RVPS answers; without, the policy has no such
function (a resource policy).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from custodes.policy.budget import (
    DEFAULT_SECONDS,
    evaluate_rules_within_budget,
    evaluate_within_budget,
    explain_within_budget,
)
from custodes.policy.engine import RegoEngine
from custodes.policy.explain import FailedCondition, explain
from custodes.policy.trace import Builtins
from custodes.rvps.messages import query_id
from custodes.types.json import Json


@dataclass(frozen=True, slots=True)
class RuleValues:
    """The values of the rules asked for (the engine's ``UNDEFINED`` for an undefined one)."""

    values: dict[str, Json]
    # Every reference value the policy asked for, in order, with the value it got; None when
    # the runner cannot see the policy's reads (a worker process).
    consulted: dict[str, Json] | None


class PolicyRunner(Protocol):
    """Runs Rego: the value of a query, the values of rules, and why rules failed
    (:func:`custodes.policy.explain.explain`)."""

    def evaluate(
        self,
        policy: str,
        query: str,
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> Json: ...

    def rules(
        self,
        policy: str,
        queries: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> RuleValues: ...

    def explain(
        self,
        policy: str,
        rules: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> list[FailedCondition]: ...


def _reader(
    reference_values: Mapping[str, Json] | None, seen: dict[str, Json] | None = None
) -> Builtins:
    """``query_reference_value`` over ``reference_values``, noting each read in ``seen``."""
    if reference_values is None:
        return {}
    values = reference_values

    def query(name: Json) -> Json:
        rv_id = query_id(name)
        value = None if rv_id is None else copy.deepcopy(values.get(rv_id))
        if seen is not None and isinstance(name, str):
            seen.setdefault(name, value)
        return value

    reader: Callable[[Json], Json] = query
    return {"query_reference_value": (1, reader)}


@dataclass(frozen=True, slots=True)
class InProcess:
    """Here, on the calling thread, without a time limit (``custodes policy test``)."""

    def evaluate(
        self,
        policy: str,
        query: str,
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> Json:
        builtins = _reader(reference_values)
        return RegoEngine.evaluate(policy, query, input=input, data=data, builtins=builtins)

    def rules(
        self,
        policy: str,
        queries: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> RuleValues:
        consulted: dict[str, Json] = {}
        builtins = _reader(reference_values, consulted)
        values = RegoEngine.evaluate_rules(
            policy, queries, input=input, data=data, builtins=builtins
        )
        return RuleValues(values, consulted)

    def explain(
        self,
        policy: str,
        rules: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> list[FailedCondition]:
        # The trace reads past failed conditions: what it reads is not "consulted". Strict: a
        # policy that cannot be traced raises (the caller shows why) rather than answering
        # with part of its conditions.
        builtins = _reader(reference_values)
        return explain(policy, rules, input=input, data=data, builtins=builtins, strict=True)


@dataclass(frozen=True, slots=True)
class Budgeted:
    """In a worker process, stopped after ``seconds`` (``PolicyBudgetExceeded``). The calling
    thread waits meanwhile: call it from a worker thread, never from the event loop."""

    seconds: float = DEFAULT_SECONDS

    def evaluate(
        self,
        policy: str,
        query: str,
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> Json:
        return evaluate_within_budget(
            policy,
            query,
            input=input,
            data=data,
            reference_values=reference_values,
            seconds=self.seconds,
        )

    def rules(
        self,
        policy: str,
        queries: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> RuleValues:
        values = evaluate_rules_within_budget(
            policy,
            list(queries),
            input=input,
            data=data,
            reference_values=reference_values,
            seconds=self.seconds,
        )
        return RuleValues(values, None)

    def explain(
        self,
        policy: str,
        rules: Sequence[str],
        *,
        input: Json,
        data: Json | None = None,
        reference_values: Mapping[str, Json] | None = None,
    ) -> list[FailedCondition]:
        # The worker traces leniently (the conditions found so far, when a policy cannot be
        # traced to the end): its log is not ours to show.
        failed = explain_within_budget(
            policy,
            list(rules),
            input=input,
            data=data,
            reference_values=reference_values,
            seconds=self.seconds,
        )
        return [FailedCondition.from_json(c) for c in failed]
