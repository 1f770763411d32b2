"""Reading an EAR token's appraisal for people: which submodule, which status, which trust
claims fell outside the affirming range. Used by the broker's logs and the guest's messages."""

from __future__ import annotations

from custodes.types.json import JsonObject


def appraisal_summary(claims: JsonObject) -> str:
    """``cpu0 ear.status=…`` with the trust claims outside the affirming range."""
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return "no appraisal"
    parts = []
    for name, appraisal in sorted(submods.items()):
        if not isinstance(appraisal, dict):
            continue
        part = f"{name} ear.status={appraisal.get('ear.status')}"
        vector = appraisal.get("ear.trustworthiness-vector")
        if isinstance(vector, dict):
            bad = [
                f"{k}={v}" for k, v in sorted(vector.items()) if isinstance(v, int) and abs(v) > 31
            ]
            if bad:
                part += " (" + ", ".join(bad) + ")"
        parts.append(part)
    return "; ".join(parts) or "no appraisal"
