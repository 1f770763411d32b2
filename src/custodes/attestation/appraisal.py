"""The appraisal of one piece of annotated evidence by an attestation policy: the one place
where a policy's ``trust_claims`` and ``extensions`` become an AR4SI status, a trust vector
and an EAR appraisal (:class:`~custodes.attestation.ear.Submodule`), with the reason for every
trust claim that is not affirming.

Used by the Attestation Service (the broker; policies run under the budget in worker
processes), by the dashboard's "test this evidence" (a draft, also under the budget) and by
``custodes policy test`` (a candidate run in the CLI's own process, which also records the
reference values the policy read). Only how the Rego runs differs: the
:class:`~custodes.policy.runner.PolicyRunner` passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.ear import (
    APPRAISAL_CLAIMS,
    Ar4siStatus,
    Submodule,
    appraisal_status,
    tier_of,
    validate_trust_claims,
)
from custodes.errors import PolicyError
from custodes.policy.engine import UNDEFINED
from custodes.policy.explain import FailedCondition
from custodes.policy.runner import PolicyRunner
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

_TRUST_CLAIMS: Final = "data.policy.trust_claims"
_EXTENSIONS: Final = "data.policy.extensions"


def policy_extensions(value: Json) -> dict[str, Json]:
    """The policy's ``extensions``: a list of ``{"name", "key", "value"}``, by name."""
    if value is UNDEFINED:
        return {}
    if not isinstance(value, list):
        raise PolicyError("policy extensions must be a list")
    merged: dict[str, Json] = {}
    for ext in value:
        if not isinstance(ext, dict) or set(ext) != {"name", "key", "value"}:
            raise PolicyError('each policy extension must be {"name", "key", "value"}')
        name, key = ext["name"], ext["key"]
        if not isinstance(name, str) or not name:
            raise PolicyError("policy extension name must be a non-empty string")
        if not isinstance(key, int) or isinstance(key, bool):
            raise PolicyError(f"policy extension {name!r}: key must be an integer")
        if name in APPRAISAL_CLAIMS or name in merged:
            raise PolicyError(f"policy extension {name!r} collides with another appraisal claim")
        merged[name] = ext["value"]
    return merged


@dataclass(frozen=True, slots=True)
class Appraisal:
    """A policy's appraisal of one submodule (``cpu0``, ...)."""

    status: Ar4siStatus
    vector: dict[str, int]
    extensions: dict[str, Json]
    # Trust claim (not affirming) -> the conditions that failed for it.
    failed: dict[str, list[FailedCondition]]
    # Every reference value the policy asked for, in order, with the value it got; None when
    # the runner cannot record them (under the budget).
    consulted: dict[str, Json] | None
    trace_error: str | None = None

    def submodule(self, annotated: JsonObject, policy_id: str | None) -> Submodule:
        """The EAR appraisal: status, vector, the policy id asked for (if known), the
        annotated evidence and the policy's extensions."""
        return Submodule(self.status, self.vector, annotated, policy_id, self.extensions)

    def explanation(self) -> JsonObject:
        """Why the claims that are not affirming are not, for the audit log: trust claim ->
        ``{"value", "failed": [condition, ...]}``."""
        return {
            name: {"value": self.vector[name], "failed": [c.to_json() for c in conditions]}
            for name, conditions in self.failed.items()
        }


def _rule(claim: str) -> str:
    """A trust claim's rule in the policy (``file-system`` -> ``file_system``)."""
    return claim.replace("-", "_")


def appraise(
    policy: str,
    annotated: JsonObject,
    reference_values: Mapping[str, Json],
    *,
    runner: PolicyRunner,
    policy_name: str = "the candidate policy",
) -> Appraisal:
    """``policy``'s appraisal of ``annotated``: its ``trust_claims`` (a full vector, checked)
    and ``extensions``, the status (the worst tier of the vector), and the failed conditions
    of each claim that is not affirming. ``PolicyError`` (naming ``policy_name``) when the
    policy does not compile, fails, or answers a malformed vector or extension."""
    results = runner.rules(
        policy, (_TRUST_CLAIMS, _EXTENSIONS), input=annotated, reference_values=reference_values
    )
    if results.values[_TRUST_CLAIMS] is UNDEFINED:
        raise PolicyError(f"{policy_name} does not define trust_claims")
    vector = validate_trust_claims(results.values[_TRUST_CLAIMS])
    extensions = policy_extensions(results.values[_EXTENSIONS])
    status = appraisal_status(vector)
    weak = [
        name
        for name, value in vector.items()
        if tier_of(value) not in (Ar4siStatus.AFFIRMING, Ar4siStatus.NONE)
    ]
    failed: dict[str, list[FailedCondition]] = {name: [] for name in weak}
    trace_error = None
    if weak:
        try:
            conditions = runner.explain(
                policy,
                [_rule(name) for name in weak],
                input=annotated,
                reference_values=reference_values,
            )
        except Exception as e:  # the trace is an aid; its failure must not hide the decision
            logger.debug("explain failed", exc_info=True)
            trace_error = f"{type(e).__name__}: {e}"
        else:
            for name in weak:
                failed[name] = [c for c in conditions if c.rule == _rule(name)]
    return Appraisal(status, vector, extensions, failed, results.consulted, trace_error)
