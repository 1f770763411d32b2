"""Which attestation policy evaluates a session: the client's policy selector, mapped by the
broker's configuration (``attestation.policy_id_map``), decided once at ``/auth``.

Upstream (trustee #1521) lets a client name a policy in ``Request.extra-params``; the broker
maps that name to an attestation policy id and refuses names it does not map. Choosing is not
an authorisation: the token names the policy that was applied (``ear.appraisal-policy-id``)
and the resource policy decides what that token may fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.errors import ProtocolError

# The policy id of a session whose client names no selector (``default_cpu`` for CPU
# evidence), as upstream's KBS always requests.
DEFAULT_POLICY_ID: Final = "default"


class UnknownPolicySelector(ProtocolError):
    code = "unknown-policy-selector"


@dataclass(frozen=True, slots=True)
class PolicySelection:
    """The client's selector (``None``: it named none) and the policy id it maps to."""

    selector: str | None
    policy_id: str


def select_policy(selector: str | None, policy_id_map: Mapping[str, str]) -> PolicySelection:
    """The policy id for ``selector``; an unmapped name is refused, never defaulted."""
    if selector is None:
        return PolicySelection(None, DEFAULT_POLICY_ID)
    policy_id = policy_id_map.get(selector)
    if policy_id is None:
        raise UnknownPolicySelector(
            f"policy selector {selector!r} is not configured on this broker"
        )
    return PolicySelection(selector, policy_id)
