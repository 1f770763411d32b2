"""Appraising one piece of annotated evidence with a candidate attestation policy, as the
Attestation Service does, with the reason for every trust claim that is not affirming.

Used where a decision is tried rather than made: ``custodes policy test`` and the dashboard's
"test this evidence" (neither stores nor issues anything).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.ear import (
    Ar4siStatus,
    appraisal_status,
    tier_of,
    validate_trust_claims,
)

# The broker's own check of a policy's ``extensions`` (reused, not copied, so that a
# candidate is held to exactly the broker's rules).
from custodes.attestation.service import _extensions
from custodes.errors import PolicyError
from custodes.policy.engine import UNDEFINED, RegoEngine
from custodes.policy.explain import FailedCondition, explain
from custodes.rvps.messages import query_id
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

_TRUST_CLAIMS: Final = "data.policy.trust_claims"
_EXTENSIONS: Final = "data.policy.extensions"


@dataclass(frozen=True, slots=True)
class Appraisal:
    """The candidate's appraisal of one submodule (``cpu0``, ...)."""

    status: Ar4siStatus
    vector: dict[str, int]
    extensions: dict[str, Json]
    # Trust claim (not affirming) -> the conditions that failed for it.
    failed: dict[str, list[FailedCondition]]
    # Every reference value the policy asked for, in order, with the value it got.
    consulted: dict[str, Json]
    trace_error: str | None = None


def appraise(policy: str, annotated: JsonObject, reference_values: Mapping[str, Json]) -> Appraisal:
    """Evaluate ``policy`` as the Attestation Service does (trust_claims and extensions; the
    status is the worst tier of the vector) and explain each claim that is not affirming."""
    consulted: dict[str, Json] = {}

    def lookup(name: Json) -> Json:
        # As the broker's RVPS: null for an invalid or unknown id.
        rv_id = query_id(name)
        return None if rv_id is None else copy.deepcopy(reference_values.get(rv_id))

    def query(name: Json) -> Json:
        value = lookup(name)
        if isinstance(name, str):
            consulted.setdefault(name, value)
        return value

    builtins = {"query_reference_value": (1, query)}
    results = RegoEngine.evaluate_rules(
        policy, (_TRUST_CLAIMS, _EXTENSIONS), input=annotated, builtins=builtins
    )
    if results[_TRUST_CLAIMS] is UNDEFINED:
        raise PolicyError("the candidate policy does not define trust_claims")
    vector = validate_trust_claims(results[_TRUST_CLAIMS])
    extensions = _extensions(results[_EXTENSIONS])
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
            conditions = explain(
                policy,
                [name.replace("-", "_") for name in weak],
                input=annotated,
                # The trace reads past failed conditions: what it reads is not "consulted".
                builtins={"query_reference_value": (1, lookup)},
                strict=True,
            )
        except Exception as e:  # the trace is an aid; its failure must not hide the decision
            logger.debug("explain failed", exc_info=True)
            trace_error = f"{type(e).__name__}: {e}"
        else:
            for name in weak:
                rule = name.replace("-", "_")
                failed[name] = [c for c in conditions if c.rule == rule]
    return Appraisal(status, vector, extensions, failed, consulted, trace_error)
