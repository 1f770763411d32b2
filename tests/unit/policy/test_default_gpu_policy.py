"""The shipped ``default_gpu`` attestation policy on the NVIDIA verifier's claims for
upstream's recorded H100 report: what each reference value raises, and what a denial shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from custodes.policy.defaults import default_policy
from custodes.policy.engine import RegoEngine
from custodes.policy.explain import explain
from custodes.types.json import Json, JsonObject
from nvidia_support import recorded_claims

POLICY = default_policy("default_gpu")


def _claims() -> dict[str, Any]:
    claims: dict[str, Any] = copy.deepcopy(recorded_claims())
    claims["config"]["nvdec0_status"] = "disabled"  # as the verifier decodes 0x55
    return claims


def _golden(claims: dict[str, Any]) -> list[str]:
    return [f"{i}:{v}" for i, v in claims["measurements"].items()]


def _rvs(claims: dict[str, Any], **changes: Json) -> dict[str, Json]:
    values: dict[str, Json] = {
        "nvidia_gpu_measurements": _golden(claims),
        "allowed_driver_versions": ["550.90.07"],
        "allowed_vbios_versions": ["96.00.9f.00.01"],
    }
    values.update(changes)
    return values


def _vector(claims: JsonObject, rvs: dict[str, Json]) -> tuple[int, int, int]:
    builtins = {"query_reference_value": (1, lambda name: rvs.get(str(name)))}
    result = RegoEngine.evaluate_rules(
        POLICY, ("data.policy.trust_claims",), input={"nvidia": claims}, builtins=builtins
    )["data.policy.trust_claims"]
    assert isinstance(result, dict)
    return result["hardware"], result["executables"], result["configuration"]


def test_nothing_trusted_without_reference_values() -> None:
    assert _vector(_claims(), {}) == (2, 33, 36)


def test_golden_measurements_and_versions_affirm() -> None:
    claims = _claims()
    assert _vector(claims, _rvs(claims)) == (2, 3, 2)


def test_a_measurement_that_is_not_golden_fails_executables_and_configuration() -> None:
    claims = _claims()
    rvs = _rvs(claims)
    claims["measurements"]["2"] = "00" * 48
    assert _vector(claims, rvs) == (2, 33, 36)


def test_alternatives_for_one_index_are_accepted() -> None:
    claims = _claims()
    rvs = _rvs(claims, nvidia_gpu_measurements=[*_golden(claims), "2:" + "ab" * 48])
    claims["measurements"]["2"] = "ab" * 48
    assert _vector(claims, rvs) == (2, 3, 2)


@pytest.mark.parametrize(("nvdec", "expected"), [("disabled", (2, 3, 2)), ("enabled", (2, 33, 36))])
def test_measurement_36_is_skipped_only_when_nvdec0_is_disabled(
    nvdec: str, expected: tuple[int, int, int]
) -> None:
    claims = _claims()
    golden = [e for e in _golden(claims) if not e.startswith("36:")] + ["36:" + "11" * 48]
    rvs = _rvs(claims, nvidia_gpu_measurements=golden)  # 36 (RIM index 35) not what it reports
    claims["config"]["nvdec0_status"] = nvdec
    assert _vector(claims, rvs) == expected


def test_one_malformed_golden_entry_matches_nothing() -> None:
    claims = _claims()
    rvs = _rvs(claims, nvidia_gpu_measurements=[*_golden(claims), "2 = 8048df"])
    assert _vector(claims, rvs) == (2, 33, 36)


def test_unlisted_driver_version_fails_executables_only() -> None:
    claims = _claims()
    assert _vector(claims, _rvs(claims, allowed_driver_versions=["535.104.05"])) == (2, 33, 2)


def test_evidence_of_another_tee_is_not_genuine_gpu_hardware() -> None:
    result = RegoEngine.evaluate_rules(
        POLICY,
        ("data.policy.trust_claims",),
        input={"sample": {"svn": "1"}},
        builtins={"query_reference_value": (1, lambda name: None)},
    )["data.policy.trust_claims"]
    assert isinstance(result, dict)
    assert result["hardware"] == 97


def test_denial_names_the_mismatched_measurements() -> None:
    claims = _claims()
    rvs = _rvs(claims)
    claims["measurements"]["2"] = "00" * 48
    (failed,) = explain(
        POLICY,
        ["configuration"],
        input={"nvidia": claims},
        builtins={"query_reference_value": (1, lambda name: rvs.get(str(name)))},
        strict=True,
    )
    assert failed.condition == "count(mismatched_indices) == 0"
    assert failed.claims == {"count(mismatched_indices)": 1}
    assert failed.via == "measurements_match"
