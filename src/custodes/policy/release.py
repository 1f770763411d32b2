"""The resource policy's decision on one request, as the broker evaluates it, and why when it
is not an allow.

Used where a decision is tried rather than made: ``custodes policy test`` and the dashboard's
"test this evidence" (neither releases anything).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from custodes.policy.explain import FailedCondition
from custodes.policy.runner import PolicyRunner
from custodes.protocol.resource import ResourcePath
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

_ALLOW: Final = "data.policy.allow"


@dataclass(frozen=True, slots=True)
class ResourceResult:
    """The candidate resource policy's decision on one request."""

    description: str
    resource: ResourcePath
    claims: JsonObject
    allow: Json
    failed: list[FailedCondition]
    trace_error: str | None = None

    @property
    def allowed(self) -> bool:
        return self.allow is True


def evaluate_resource(
    policy: str,
    claims: JsonObject,
    resource: ResourcePath,
    description: str,
    *,
    runner: PolicyRunner,
) -> ResourceResult:
    """``data.policy.allow`` as the broker evaluates it, and why when it is not true.
    ``runner``: in this process (``custodes policy test``), or under the broker's budget (the
    dashboard)."""
    data: JsonObject = {
        "plugin": "resource",
        "resource-path": list(resource.segments),
        "query": {},
    }
    decision = runner.evaluate(policy, _ALLOW, input=claims, data=data)
    failed: list[FailedCondition] = []
    trace_error = None
    if decision is not True:
        try:
            failed = runner.explain(policy, ["allow"], input=claims, data=data)
        except Exception as e:  # the trace is an aid; its failure must not hide the decision
            logger.debug("explain failed", exc_info=True)
            trace_error = f"{type(e).__name__}: {e}"
    return ResourceResult(description, resource, claims, decision, failed, trace_error)
