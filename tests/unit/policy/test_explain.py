"""Denial explanations list every failed condition at once, across rules and helper rules.

The shipped ``default_cpu`` policy on the annotated evidence of each TEE it knows (sample,
snp, tdx, tpm), with the reference values a broker would have, or none: each explanation must
name every condition that fails, with the claim it read and the reference value it compared
with, in one answer (Rego itself stops a rule body at its first false condition).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from custodes.attestation.service import annotated_evidence
from custodes.errors import PolicyError
from custodes.policy.defaults import default_policy
from custodes.policy.explain import FailedCondition, explain, reference_value_reader
from custodes.policy.trace import TraceUnavailable
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

CPU = default_policy("default_cpu")
CLAIMS = ["executables", "hardware", "configuration"]
SAMPLE: JsonObject = {
    "svn": "1",
    "report_data": "AAAA",
    "launch_digest": "abcde",
    "platform_version": {"major": 1, "minor": 4},
    "debug": False,
}


def _line(text: str) -> int:
    return 1 + CPU.splitlines().index(f"\t{text}")


def _explain(
    tee: Tee, claims: JsonObject, rv: dict[str, Json], rules: list[str] = CLAIMS
) -> list[FailedCondition]:
    annotated = annotated_evidence(tee, claims, init_data_claims=None, runtime_data_claims={})
    return explain(CPU, rules, input=annotated, builtins=reference_value_reader(rv), strict=True)


def _by_condition(failed: list[FailedCondition]) -> dict[str, FailedCondition]:
    return {f.condition: f for f in failed}


def test_sample_without_reference_values_lists_every_failed_condition() -> None:
    failed = _explain(Tee.SAMPLE, SAMPLE, {})
    assert [f.to_json() for f in failed] == [
        {
            "rule": "executables",
            "line": _line('accepted(input.sample.launch_digest, "launch_digest")'),
            "condition": 'accepted(input.sample.launch_digest, "launch_digest")',
            "claims": {"input.sample.launch_digest": "abcde"},
            "reference_values": {"launch_digest": None},
        },
        {
            "rule": "hardware",
            "line": _line('accepted(input.sample.svn, "svn")'),
            "condition": 'accepted(input.sample.svn, "svn")',
            "claims": {"input.sample.svn": "1"},
            "reference_values": {"svn": None},
        },
        {
            "rule": "hardware",
            "line": _line('input.sample.platform_version.major == rv("major_version")'),
            "condition": 'input.sample.platform_version.major == rv("major_version")',
            "claims": {"input.sample.platform_version.major": 1},
            "reference_values": {"major_version": None},
        },
        {
            "rule": "hardware",
            "line": _line("is_number(minimum)"),
            "condition": "is_number(minimum)",
            "claims": {},
            "reference_values": {"minimum_minor_version": None},
        },
    ]


def test_a_string_where_the_claim_is_a_number_is_named() -> None:
    rv: dict[str, Json] = {
        "svn": ["1"],
        "launch_digest": ["abcde"],
        "major_version": ["1"],  # what an untyped register used to store
        "minimum_minor_version": 0,
    }
    (failed,) = _explain(Tee.SAMPLE, SAMPLE, rv)
    assert failed.condition == 'input.sample.platform_version.major == rv("major_version")'
    assert failed.claims == {"input.sample.platform_version.major": 1}
    assert failed.reference_values == {"major_version": ["1"]}


def test_nothing_fails_with_the_right_reference_values() -> None:
    rv: dict[str, Json] = {
        "svn": ["1"],
        "launch_digest": ["abcde"],
        "major_version": 1,
        "minimum_minor_version": 0,
    }
    assert _explain(Tee.SAMPLE, SAMPLE, rv) == []


def test_only_the_rules_asked_about_are_explained() -> None:
    failed = _explain(Tee.SAMPLE, SAMPLE, {}, rules=["executables"])
    assert [f.rule for f in failed] == ["executables"]


def test_other_tees_rules_are_not_reported() -> None:
    # The snp, tdx, tpm... bodies stop at their guard (input.snp) for sample evidence.
    failed = _explain(Tee.SAMPLE, SAMPLE, {})
    assert all("sample" in f.condition or "minimum" in f.condition for f in failed)


SNP: JsonObject = {
    "measurement": "aa" * 48,
    "reported_tcb_bootloader": 10,
    "reported_tcb_microcode": 25,
    "reported_tcb_snp": 23,
    "reported_tcb_tee": 0,
    "policy_debug_allowed": True,  # configuration fails in both of its bodies
    "policy_migrate_ma": False,
    "platform_smt_enabled": True,
    "platform_tsme_enabled": False,
    "policy_abi_major": 0,
    "policy_abi_minor": 31,
    "policy_single_socket": False,
    "policy_smt_allowed": True,
}


def test_snp_failures_inside_helper_rules_are_listed_with_the_helper() -> None:
    failed = _by_condition(_explain(Tee.SNP, SNP, {}))
    debug = failed["input.snp.policy_debug_allowed == false"]
    assert debug.rule == "configuration" and debug.via == "snp_guest_locked_down"
    assert debug.claims == {"input.snp.policy_debug_allowed": True}
    assert debug.to_json()["via"] == "snp_guest_locked_down"
    # Past the guest policy, every platform comparison of the other helper, each on its own.
    for claim, rv in (
        ("platform_smt_enabled", "snp_smt_enabled"),
        ("platform_tsme_enabled", "snp_tsme_enabled"),
        ("policy_abi_major", "snp_guest_abi_major"),
        ("policy_abi_minor", "snp_guest_abi_minor"),
        ("policy_single_socket", "snp_single_socket"),
        ("policy_smt_allowed", "snp_smt_allowed"),
    ):
        f = failed[f'input.snp.{claim} == rv("{rv}")']
        assert f.via == "snp_platform_as_expected"
        assert f.claims == {f"input.snp.{claim}": SNP[claim]}
        assert f.reference_values == {rv: None}
    for claim, rv in (
        ("reported_tcb_bootloader", "snp_bootloader"),
        ("reported_tcb_microcode", "snp_microcode"),
        ("reported_tcb_snp", "snp_snp_svn"),
        ("reported_tcb_tee", "snp_tee_svn"),
    ):
        f = failed[f'accepted(input.snp.{claim}, "{rv}")']
        assert f.rule == "hardware" and f.via is None
        assert f.reference_values == {rv: None}
    assert 'accepted(input.snp.measurement, "snp_launch_measurement")' in failed
    assert len(failed) == 1 + 6 + 4 + 1


TDX: JsonObject = {
    "quote": {
        "header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
        "body": {"mr_td": "11" * 48, "rtmr_1": "22" * 48, "rtmr_2": "33" * 48, "xfam": "e7"},
    },
    "td_attributes": {"debug": False},
    "tcb_status": "OutOfDate",
    "collateral_expiration_status": "0",
    "uefi_event_logs": [],
}


def test_tdx_claims_read_through_a_function_argument() -> None:
    failed = _by_condition(_explain(Tee.TDX, TDX, {}))
    mr_td = failed['accepted(quote.body.mr_td, "mr_td")']
    assert mr_td.rule == "hardware" and mr_td.via == "tdx_quote_genuine"
    assert mr_td.claims == {"quote.body.mr_td": "11" * 48}  # the value, read in the function
    status = failed['input.tdx.tcb_status == "UpToDate"']
    assert status.claims == {"input.tdx.tcb_status": "OutOfDate"}
    assert failed['accepted(input.tdx.quote.body.rtmr_1, "rtmr_1")'].via == (
        "tdx_boot_chain_as_expected"
    )
    assert 'accepted(input.tdx.quote.body.rtmr_2, "rtmr_2")' in failed
    assert 'accepted(input.tdx.quote.body.xfam, "xfam")' in failed


def test_tpm_both_executables_conditions() -> None:
    tpm = {"pcr11": "00" * 32, "ak_public": "-----BEGIN PUBLIC KEY-----"}
    failed = _explain(Tee.TPM, tpm, {})
    assert [(f.condition, f.reference_values) for f in failed] == [
        ('accepted(input.tpm.pcr11, "tpm_pcr11")', {"tpm_pcr11": None}),
        ('accepted(input.tpm.ak_public, "trusted_aks")', {"trusted_aks": None}),
    ]


RESOURCE = """package policy
import rego.v1
default allow := false
allow if {
	print("the policy's own print is left alone")
	input.submods.cpu0["ear.status"] == "affirming"
	input.submods.cpu0["ear.trustworthiness-vector"].hardware == 2
	data["resource-path"][0] == "default"
}
"""


def test_resource_policy_every_condition_with_data() -> None:
    claims: dict[str, Any] = {
        "submods": {
            "cpu0": {"ear.status": "warning", "ear.trustworthiness-vector": {"hardware": 97}}
        }
    }
    data = {"plugin": "resource", "resource-path": ["other", "key", "x"], "query": {}}
    failed = explain(RESOURCE, ["allow"], input=claims, data=data, strict=True)
    assert [(f.line, f.claims) for f in failed] == [
        (6, {'input.submods.cpu0["ear.status"]': "warning"}),
        (7, {'input.submods.cpu0["ear.trustworthiness-vector"].hardware': 97}),
        (8, {'data["resource-path"][0]': "other"}),
    ]


def test_default_resource_policy_names_the_submods() -> None:
    claims = {"submods": {"cpu0": {"ear.status": "contraindicated"}}}
    data = {"plugin": "resource", "resource-path": ["default", "key", "x"], "query": {}}
    (failed,) = explain(default_policy("resource_policy"), ["allow"], input=claims, data=data)
    assert failed.condition == "every _, appraisal in input.submods {"
    assert failed.claims == {"input.submods": claims["submods"]}


def test_a_policy_that_cannot_be_traced(caplog: pytest.LogCaptureFixture) -> None:
    broken = "package policy\nallow {\n"
    with pytest.raises(TraceUnavailable, match="syntax tree"):
        explain(broken, ["allow"], input={}, strict=True)
    # In the broker an explanation never turns a decision into an error.
    with caplog.at_level(logging.WARNING):
        assert explain(broken, ["allow"], input={}) == []
    assert "cannot explain the policy decision" in caplog.text


CONSTRUCTS = """package policy
import rego.v1
default allow := false
allow if {
	input.a == 1
} else := false if {
	input.b == 2
} else := true
f(x) := y if { y := x + 1 }
s contains v if { some v in input.l; v > 3 }
g if { count(s) > 5 }
h if { f(1) == 3 }
allow2 if { g; h
	input.c == [1,
		2] }
"""


def test_else_chains_sets_functions_and_multi_line_statements() -> None:
    inp = {"a": 0, "b": 0, "l": [1, 5], "c": [1]}
    failed = explain(CONSTRUCTS, ["allow"], input=inp, strict=True)
    assert [(f.line, f.claims) for f in failed] == [(5, {"input.a": 0}), (7, {"input.b": 0})]
    failed = explain(CONSTRUCTS, ["allow2"], input=inp, strict=True)
    assert [(f.line, f.condition, f.claims, f.via) for f in failed] == [
        (11, "count(s) > 5", {"count(s)": 1}, "g"),
        (12, "f(1) == 3", {"f(1)": 2}, "h"),
        (14, "input.c == [1, …", {"input.c": [1]}, None),  # the constant is not a claim
    ]


def test_a_failed_condition_survives_json() -> None:
    # As a policy worker answers: every condition read back is the one written.
    inp = {"a": 0, "b": 0, "l": [1, 5], "c": [1]}
    failed = explain(CONSTRUCTS, ["allow", "allow2"], input=inp, strict=True)
    assert any(f.via is not None for f in failed) and any(f.via is None for f in failed)
    for f in failed:
        assert FailedCondition.from_json(f.to_json()) == f


GOOD_CONDITION: JsonObject = {
    "rule": "allow",
    "line": 5,
    "condition": "input.a == 1",
    "claims": {"input.a": 0},
    "reference_values": {},
}


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        {k: v for k, v in GOOD_CONDITION.items() if k != "line"},
        {**GOOD_CONDITION, "extra": 1},
        {**GOOD_CONDITION, "rule": 1},
        {**GOOD_CONDITION, "line": "5"},
        {**GOOD_CONDITION, "line": True},
        {**GOOD_CONDITION, "condition": None},
        {**GOOD_CONDITION, "claims": []},
        {**GOOD_CONDITION, "reference_values": "svn"},
        {**GOOD_CONDITION, "via": 3},
    ],
)
def test_a_malformed_failed_condition_is_refused(obj: Json) -> None:
    assert FailedCondition.from_json(GOOD_CONDITION).line == 5
    with pytest.raises(PolicyError, match="not the shape explain gives"):
        FailedCondition.from_json(obj)
