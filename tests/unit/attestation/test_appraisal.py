"""The one appraisal (custodes.attestation.appraisal.appraise) under both ways of running Rego:
in this process (``custodes policy test``) and in budgeted worker processes (the broker, the
dashboard). Real regorus, real worker processes, the shipped ``default_cpu`` policy."""

from __future__ import annotations

import pytest

from custodes.attestation.appraisal import appraise, policy_extensions
from custodes.attestation.ear import TRUST_CLAIM_NAMES, Ar4siStatus, EarClaims
from custodes.attestation.service import annotated_evidence
from custodes.errors import PolicyError
from custodes.policy.budget import PolicyBudgetExceeded
from custodes.policy.defaults import default_policy
from custodes.policy.engine import UNDEFINED
from custodes.policy.runner import Budgeted, InProcess, PolicyRunner
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

CPU = default_policy("default_cpu")
SAMPLE_RVS: dict[str, Json] = {
    "launch_digest": ["abcde"],
    "svn": ["1"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
ANNOTATED = annotated_evidence(
    Tee.SAMPLE,
    {
        "svn": "1",
        "report_data": "AAAA",
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    },
    init_data_claims=None,
    runtime_data_claims={"nonce": "bm9uY2U"},
)
RUNNERS: list[PolicyRunner] = [InProcess(), Budgeted(10.0)]
LOOP = """
    some i in numbers.range(1, 100000)
    some j in numbers.range(1, 100000)
    i == j + 1000000
"""


@pytest.mark.parametrize("rvs", [{}, SAMPLE_RVS, {"svn": ["2"]}])
def test_both_runners_give_the_same_appraisal(rvs: dict[str, Json]) -> None:
    here, budgeted = (appraise(CPU, ANNOTATED, rvs, runner=r) for r in RUNNERS)
    assert here.status == budgeted.status
    assert here.vector == budgeted.vector
    assert here.extensions == budgeted.extensions
    assert here.failed == budgeted.failed
    assert here.trace_error is None and budgeted.trace_error is None
    # Only a run in this process sees which reference values the policy read.
    assert here.consulted is not None and "launch_digest" in here.consulted
    assert budgeted.consulted is None


def test_without_reference_values_each_weak_claim_is_explained() -> None:
    a = appraise(CPU, ANNOTATED, {}, runner=Budgeted())
    assert a.status is Ar4siStatus.CONTRAINDICATED
    assert list(a.vector) == list(TRUST_CLAIM_NAMES)
    assert set(a.failed) == {"executables", "hardware"}
    assert all(c.rule == name for name, cs in a.failed.items() for c in cs)
    assert a.failed["executables"] and a.failed["hardware"]
    explanation = a.explanation()
    assert set(explanation) == {"executables", "hardware"}
    assert explanation["hardware"] == {
        "value": 97,
        "failed": [c.to_json() for c in a.failed["hardware"]],
    }


def test_an_affirming_appraisal_needs_no_explanation() -> None:
    a = appraise(CPU, ANNOTATED, SAMPLE_RVS, runner=Budgeted())
    assert a.status is Ar4siStatus.AFFIRMING
    assert a.failed == {} and a.explanation() == {}


def test_the_submodule_is_the_ear_appraisal() -> None:
    a = appraise(CPU, ANNOTATED, SAMPLE_RVS, runner=InProcess())
    claims = a.submodule(ANNOTATED, "default").to_json()
    assert list(claims) == [
        "ear.status",
        "ear.trustworthiness-vector",
        "ear.appraisal-policy-id",
        "ear.veraison.annotated-evidence",
        "ear.trustee.identifiers",
    ]
    assert claims["ear.status"] == "affirming"
    parsed = EarClaims.parse({"submods": {"cpu0": claims}}).submodules["cpu0"]
    assert parsed.vector == a.vector and parsed.annotated_evidence == ANNOTATED
    # Without a policy id (the dashboard's replay), the claim is left out.
    assert "ear.appraisal-policy-id" not in a.submodule(ANNOTATED, None).to_json()


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_policy_without_trust_claims_is_named(runner: PolicyRunner) -> None:
    policy = "package policy\nimport rego.v1\nx := 1\n"
    with pytest.raises(PolicyError, match=r"^the candidate policy does not define trust_claims"):
        appraise(policy, ANNOTATED, {}, runner=runner)
    with pytest.raises(PolicyError, match=r"^policy 'default_cpu' does not define trust_claims"):
        appraise(policy, ANNOTATED, {}, runner=runner, policy_name="policy 'default_cpu'")


@pytest.mark.parametrize(
    ("extensions", "message"),
    [
        ({"name": "x"}, "policy extensions must be a list"),
        ([1], 'each policy extension must be {"name", "key", "value"}'),
        ([{"name": "", "key": 1, "value": 1}], "name must be a non-empty string"),
        ([{"name": "a", "key": "k", "value": 1}], "'a': key must be an integer"),
        ([{"name": "a", "key": True, "value": 1}], "'a': key must be an integer"),
        ([{"name": "ear.status", "key": 1, "value": 1}], "'ear.status' collides"),
        (
            [{"name": "a", "key": 1, "value": 1}, {"name": "a", "key": 2, "value": 2}],
            "'a' collides",
        ),
    ],
)
def test_malformed_extensions_refused(extensions: Json, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_extensions(extensions)
    assert message in str(caught.value)


def test_extensions_by_name() -> None:
    assert policy_extensions(UNDEFINED) == {}
    assert policy_extensions([{"name": "a", "key": -70000, "value": {"n": 1}}]) == {"a": {"n": 1}}


def test_a_runaway_policy_is_stopped_by_the_budget() -> None:
    policy = f'package policy\nimport rego.v1\ntrust_claims := {{"hardware": 2}} if {{{LOOP}}}\n'
    with pytest.raises(PolicyBudgetExceeded, match=r"budget of 0\.5 s"):
        appraise(policy, ANNOTATED, {}, runner=Budgeted(0.5))


def test_an_explanation_over_the_budget_does_not_hide_the_decision() -> None:
    # The decision is quick (the first condition fails), but the trace relaxes that condition
    # and runs into the loop behind it: the appraisal stands, without its reasons.
    policy = (
        "package policy\nimport rego.v1\n"
        "default hardware := 97\n"
        f'hardware := 2 if {{\n    input.sample.svn == "9"\n{LOOP}}}\n'
        'trust_claims := {"hardware": hardware}\n'
    )
    a = appraise(policy, ANNOTATED, {}, runner=Budgeted(1.0))
    assert a.status is Ar4siStatus.CONTRAINDICATED and a.vector["hardware"] == 97
    assert a.trace_error is not None and "PolicyBudgetExceeded" in a.trace_error
    assert a.explanation() == {"hardware": {"value": 97, "failed": []}}


def test_reference_values_are_read_as_the_rvps_answers() -> None:
    # An unknown id and an invalid one both read as null, in either runner; the values the
    # policy sees are copies (a policy cannot change the caller's reference values).
    policy = (
        "package policy\nimport rego.v1\n"
        'trust_claims := {"hardware": 2} if {\n'
        '    query_reference_value("svn") == ["1"]\n'
        '    query_reference_value("nope") == null\n'
        '    query_reference_value("not an id!") == null\n'
        "}\n"
    )
    rvs: dict[str, Json] = {"svn": ["1"]}
    for runner in RUNNERS:
        assert appraise(policy, ANNOTATED, rvs, runner=runner).vector["hardware"] == 2
    here = appraise(policy, ANNOTATED, rvs, runner=InProcess())
    assert here.consulted == {"svn": ["1"], "nope": None, "not an id!": None}
    assert rvs == {"svn": ["1"]}


def _annotated(svn: str) -> JsonObject:
    return {**ANNOTATED, "sample": {**ANNOTATED["sample"], "svn": svn}}


def test_the_input_decides() -> None:
    # Guards against a runner that ignores its input: another svn, another vector.
    for runner in RUNNERS:
        good = appraise(CPU, _annotated("1"), SAMPLE_RVS, runner=runner)
        bad = appraise(CPU, _annotated("7"), SAMPLE_RVS, runner=runner)
        assert good.status is Ar4siStatus.AFFIRMING
        assert bad.status is not Ar4siStatus.AFFIRMING
