"""The guest's policy selector: the name of the attestation policy a broker should appraise
this guest's evidence with (upstream's ``extra-params`` member, trustee #1521; set in
upstream's attestation agent as ``[token_configs.kbs] attestation_policy_selector``,
guest-components #1604).

The broker maps the name (``attestation.policy_id_map``) and refuses names it does not map;
the guest only checks the form, with the protocol's own rule, so that a typo in a pod's
configuration fails before any handshake instead of as the broker's 400.
"""

from __future__ import annotations

from typing import Final

from custodes.errors import ConfigError, MalformedMessage
from custodes.protocol.messages import POLICY_SELECTOR, PROTOCOL_VERSION, Request
from custodes.types.tee import Tee

FORM: Final = "1 to 64 characters of A-Z a-z 0-9 . _ -"


def check_policy_selector(name: object, where: str) -> str:
    """``name`` when the broker's parser would accept it as a selector, else ``ConfigError``
    naming ``where`` (``--policy-selector``, ``brokers[0].policy_selector``, …)."""
    if isinstance(name, str):
        # The broker's parser is the one rule for the form: ask it rather than copy it.
        probe = Request(PROTOCOL_VERSION, Tee.SAMPLE, {POLICY_SELECTOR: name})
        try:
            if probe.policy_selector() == name:
                return name
        except MalformedMessage:
            pass
        raise ConfigError(f"{where}: {name[:64]!r} is not a valid policy selector ({FORM})")
    raise ConfigError(f"{where}: a policy selector is a string ({FORM})")
