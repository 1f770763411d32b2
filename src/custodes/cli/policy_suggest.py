"""``custodes policy test --suggest``: the reference values that would make the judged
evidence pass, proposed as trust on first use and never applied.

The values come from :func:`custodes.policy.suggest.suggest` (evaluation, not the policy's
text), submodule by submodule, each seeing the values proposed for the ones before. They are
printed as the ``custodes admin reference-value register`` commands that store them exactly
(typed: a number stays a number) and, with ``--suggest-message FILE``, written as the RVPS
message that ``register --message FILE`` sends. Registering them is the admin's decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from custodes.cli._common import write_output
from custodes.policy.explain import FailedCondition
from custodes.policy.suggest import suggest
from custodes.rvps.messages import sample_message
from custodes.rvps.typed_values import register_command
from custodes.types.json import Json, JsonObject

TOFU_WARNING: Final = (
    "TRUST ON FIRST USE: these values are copied from the evidence being judged; approve "
    "them only if you trust this machine. Nothing was registered."
)


def suggested_values(
    policy: str,
    annotated: Mapping[str, JsonObject],
    weak: Mapping[str, list[str]],
    reference_values: Mapping[str, Json],
) -> dict[str, Json]:
    """``{id: value}`` to register so that each submodule's weak trust claims (``weak``:
    submodule -> claim names) pass, where reference values decide them."""
    merged = dict(reference_values)
    found: dict[str, Json] = {}
    for name, evidence in annotated.items():
        rules = [claim.replace("-", "_") for claim in weak.get(name, [])]
        if not rules:
            continue
        values = suggest(policy, rules, input=evidence, reference_values=merged)
        merged.update(values)
        found.update(values)
    return dict(sorted(found.items()))


@dataclass(frozen=True, slots=True)
class Suggested:
    values: dict[str, Json]
    # The candidate's decision with the values registered, and what still fails then.
    decision: str
    still_failed: dict[str, dict[str, list[FailedCondition]]]
    message_path: Path | None = None

    @property
    def message(self) -> JsonObject:
        return sample_message(self.values)

    def to_json(self) -> JsonObject:
        return {
            "warning": TOFU_WARNING,
            "reference_values": dict(self.values),
            "commands": [register_command(k, v) for k, v in self.values.items()],
            "message": self.message if self.values else None,
            "message_file": None if self.message_path is None else str(self.message_path),
            "decision_with_them": self.decision,
            "still_failed": {
                submod: {claim: [c.to_json() for c in cs] for claim, cs in claims.items()}
                for submod, claims in self.still_failed.items()
            },
        }

    def text(self) -> str:
        if not self.values:
            out = ["suggested reference values: none (no reference value changes the decision)"]
        else:
            out = ["suggested reference values:", f"  {TOFU_WARNING}", "  to approve them:"]
            out.extend(f"    {register_command(k, v)}" for k, v in self.values.items())
            if self.message_path is not None:
                out.append(
                    "  or, all at once: custodes admin reference-value register --message "
                    f"{self.message_path}"
                )
            out.append(f"  with them the candidate decides: {self.decision}")
        for submod, claims in self.still_failed.items():
            for claim, conditions in claims.items():
                if not conditions:
                    continue
                out.append(f"  still failing for {submod} {claim} (not a reference value):")
                for c in conditions:
                    where = f"rule {c.rule}" if c.via is None else f"rule {c.rule} via {c.via}"
                    out.append(f"    failed condition ({where}, line {c.line}): {c.condition}")
                    for path, value in c.claims.items():
                        out.append(f"      claim {path} = {json.dumps(value, sort_keys=True)}")
        return "\n".join(out)

    def write_message(self) -> None:
        """The RVPS message file (mode 0600), written whole or not at all."""
        if self.message_path is not None and self.values:
            data = json.dumps(self.message, indent=2) + "\n"
            write_output(data.encode("utf-8"), self.message_path)
