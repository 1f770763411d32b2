"""Composite evidence: the devices a CPU TEE vouches for (``additional_evidence``).

Upstream's wire shape: the Attestation's ``tee-evidence.additional_evidence`` is a JSON *string*
(``""`` when there are no devices) holding a map TEE name -> that TEE's evidence, e.g.
``{"nvidia": {"device_evidence_list": [...]}}``. The CPU TEE's report data covers this exact
string (``H(JCS({"additional-evidence", "nonce", "tee-pubkey"}))``), so the CPU evidence vouches
for the device evidence; each device binds the shorter ``H(JCS({"nonce", "tee-pubkey"}))``.

Only device TEEs may appear in the map: a second CPU TEE would be bound to nothing it proves.
Each device becomes one EAR submodule per verified device (``gpu0``, ``gpu1``, … after
``cpu0``), appraised by the ``<policy id>_<class>`` policy (``default_gpu``).

Tokens stay small enough for an HTTP header (upstream #1563): a GPU's 64 measurements and
their counts are ~7 KiB of hex per GPU, so the token carries their SHA-384 digest
(``measurements_sha384``) instead; and the CPU submodule's runtime data leaves out a
non-empty ``additional-evidence`` (the devices' evidence text, ~14 KiB per GPU), as upstream
does with ``verbose_token = false``. The policies saw everything in full, and ``custodes
evidence verify`` on the same evidence shows it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Final

from custodes._internal import jcs
from custodes.attestation.ear import EVIDENCE_CLAIM
from custodes.errors import MalformedEvidence, UnsupportedTee
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

MAX_DEVICE_TEES: Final = 4
_RUNTIME: Final = "runtime_data_claims"
_ADDITIONAL: Final = "additional-evidence"


def parse_additional_evidence(text: str) -> list[tuple[Tee, Json]]:
    """The devices in ``additional_evidence``, in the order sent; ``[]`` for ``""``."""
    if text == "":
        return []
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise MalformedEvidence("additional_evidence is not a JSON string of an object") from e
    if not isinstance(value, dict) or not value:
        raise MalformedEvidence('additional_evidence must be a non-empty object {"<tee>": ...}')
    if len(value) > MAX_DEVICE_TEES:
        raise MalformedEvidence(f"additional_evidence names {len(value)} TEEs, at most 4")
    devices: list[tuple[Tee, Json]] = []
    for name, evidence in value.items():
        tee = Tee.parse(name)
        if not tee.device:
            raise UnsupportedTee(
                f"additional_evidence may carry device evidence only, not {tee} evidence"
            )
        devices.append((tee, evidence))
    return devices


def device_runtime_data_claims(runtime_data_claims: JsonObject) -> JsonObject:
    """What a device is bound to: the runtime data without ``additional-evidence``."""
    return {
        k: copy.deepcopy(v) for k, v in runtime_data_claims.items() if k != "additional-evidence"
    }


def _compact_gpu(claims: Json) -> Json:
    if not isinstance(claims, dict) or "measurements" not in claims:
        return claims
    compact = dict(claims)
    config = compact.get("config")
    counts: Json = None
    if isinstance(config, dict):
        config = dict(config)
        counts = config.pop("measurement_count", None)
        compact["config"] = config
    measured: JsonObject = {
        "measurements": compact.pop("measurements"),
        "measurement_count": counts,
    }
    compact["measurements_sha384"] = hashlib.sha384(jcs.dumps(measured)).hexdigest()
    return compact


def _compact_evidence(evidence: JsonObject) -> JsonObject:
    slim = dict(evidence)
    runtime = slim.get(_RUNTIME)
    if isinstance(runtime, dict) and runtime.get(_ADDITIONAL):
        slim[_RUNTIME] = {k: v for k, v in runtime.items() if k != _ADDITIONAL}
    if Tee.NVIDIA.value in slim:
        slim[Tee.NVIDIA.value] = _compact_gpu(slim[Tee.NVIDIA.value])
    return slim


def compact_for_token(submods: Mapping[str, JsonObject]) -> dict[str, JsonObject]:
    """The submodules as the token carries them: GPU measurements as one digest, and the
    CPU's runtime data without the device evidence text (upstream's ``verbose_token =
    false``), which the CPU verifier has bound and each device submodule describes."""
    out: dict[str, JsonObject] = {}
    for name, appraisal in submods.items():
        evidence = appraisal.get(EVIDENCE_CLAIM)
        if isinstance(evidence, dict):
            appraisal = {**appraisal, EVIDENCE_CLAIM: _compact_evidence(evidence)}
        out[name] = appraisal
    return out
