"""The two ways of running a policy (custodes.policy.runner) answer alike: a resource policy
with its data, undefined rules, reference values or none, errors; only the budgeted one stops
a runaway policy. Real regorus, real worker processes."""

from __future__ import annotations

import pytest

from custodes.errors import PolicyError
from custodes.policy.budget import PolicyBudgetExceeded
from custodes.policy.engine import UNDEFINED
from custodes.policy.runner import Budgeted, InProcess, PolicyRunner
from custodes.types.json import JsonObject

RUNNERS: list[PolicyRunner] = [InProcess(), Budgeted(10.0)]
RESOURCE = """package policy
import rego.v1
default allow := false
allow if {
	data["resource-path"][2] == "db-password"
	input.submods.cpu0["ear.status"] == "affirming"
}
"""
CLAIMS: JsonObject = {"submods": {"cpu0": {"ear.status": "warning"}}}
DATA: JsonObject = {"plugin": "resource", "resource-path": ["default", "key", "db-password"]}


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_resource_policy_with_its_data(runner: PolicyRunner) -> None:
    assert runner.evaluate(RESOURCE, "data.policy.allow", input=CLAIMS, data=DATA) is False
    affirming: JsonObject = {"submods": {"cpu0": {"ear.status": "affirming"}}}
    assert runner.evaluate(RESOURCE, "data.policy.allow", input=affirming, data=DATA) is True
    (failed,) = runner.explain(RESOURCE, ["allow"], input=CLAIMS, data=DATA)
    assert failed.rule == "allow" and failed.line == 6
    assert failed.claims == {'input.submods.cpu0["ear.status"]': "warning"}


@pytest.mark.parametrize("runner", RUNNERS)
def test_undefined_rules_and_reference_values(runner: PolicyRunner) -> None:
    policy = 'package policy\nimport rego.v1\nv := query_reference_value("svn")\n'
    result = runner.rules(
        policy, ["data.policy.v", "data.policy.w"], input={}, reference_values={"svn": [1]}
    )
    assert result.values == {"data.policy.v": [1], "data.policy.w": UNDEFINED}
    assert result.consulted == ({"svn": [1]} if isinstance(runner, InProcess) else None)


@pytest.mark.parametrize("runner", RUNNERS)
def test_without_reference_values_the_function_does_not_exist(runner: PolicyRunner) -> None:
    # A resource policy is given no reference values, in the broker as in a dry run.
    policy = 'package policy\nimport rego.v1\nv := query_reference_value("svn")\n'
    with pytest.raises(PolicyError):
        runner.evaluate(policy, "data.policy.v", input={})


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_policy_that_does_not_compile(runner: PolicyRunner) -> None:
    with pytest.raises(PolicyError):
        runner.evaluate("not rego {", "data.policy.allow", input={})


def test_only_the_budgeted_runner_stops_a_runaway_policy() -> None:
    runaway = (
        "package policy\nimport rego.v1\nallow if {\n"
        "    some i in numbers.range(1, 100000)\n"
        "    some j in numbers.range(1, 100000)\n"
        "    i == j + 1000000\n}\n"
    )
    with pytest.raises(PolicyBudgetExceeded):
        Budgeted(0.5).evaluate(runaway, "data.policy.allow", input={})
    # The next evaluation is answered (a fresh worker took the stopped one's place).
    assert Budgeted(10.0).evaluate(RESOURCE, "data.policy.allow", input=CLAIMS, data=DATA) is False
