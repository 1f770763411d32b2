"""Rego evaluation with a time budget (custodes.policy.budget), on real regorus in real
worker processes: answers as the engine answers, stops a runaway policy at its budget, and
keeps serving afterwards with the pool never growing past its bound."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from custodes.errors import PolicyError
from custodes.policy.budget import (
    BudgetedEvaluator,
    PolicyBudgetExceeded,
    evaluate_within_budget,
    explain_within_budget,
)
from custodes.policy.engine import UNDEFINED, RegoEngine

ALLOW_IF_ADMIN = """
package policy

import rego.v1

default allow := false

allow if {
    input.role == "admin"
}
"""

# 10^10 iterations without allocating: runs for hours unless stopped.
RUNAWAY = """
package policy

import rego.v1

default allow := false

allow if {
    some i in numbers.range(1, 100000)
    some j in numbers.range(1, 100000)
    i == j + 1000000
}
"""

REFERENCE = """
package policy

import rego.v1

allow if input.svn in query_reference_value("svn")
"""


@pytest.fixture
def pool() -> Iterator[BudgetedEvaluator]:
    evaluator = BudgetedEvaluator(max_workers=2)
    yield evaluator
    evaluator.close()


def test_answers_as_the_engine_does() -> None:
    for role in ("admin", "guest"):
        got = evaluate_within_budget(ALLOW_IF_ADMIN, "data.policy.allow", input={"role": role})
        assert got == RegoEngine.evaluate(ALLOW_IF_ADMIN, "data.policy.allow", input={"role": role})
    assert evaluate_within_budget(ALLOW_IF_ADMIN, "data.policy.nothing", input={}) is UNDEFINED


def test_reference_values_are_data_in_the_worker() -> None:
    values = {"svn": ["2", "3"]}
    run = evaluate_within_budget
    assert run(REFERENCE, "data.policy.allow", input={"svn": "2"}, reference_values=values)
    assert run(REFERENCE, "data.policy.allow", input={"svn": "1"}, reference_values=values) in (
        False,
        UNDEFINED,
    )


def test_a_broken_policy_is_a_policy_error_not_a_timeout() -> None:
    with pytest.raises(PolicyError, match="does not compile") as info:
        evaluate_within_budget("package policy\nallow if {", "data.policy.allow", input={})
    assert not isinstance(info.value, PolicyBudgetExceeded)


def test_explanations_come_back_as_json() -> None:
    failed = explain_within_budget(ALLOW_IF_ADMIN, "allow", input={"role": "guest"})
    assert failed and isinstance(failed[0], dict)
    assert "input.role" in str(failed[0]["condition"])


def test_a_runaway_policy_is_stopped_at_its_budget(pool: BudgetedEvaluator) -> None:
    started = time.monotonic()
    with pytest.raises(PolicyBudgetExceeded, match=r"budget of 0\.5 s"):
        pool.run(
            "evaluate",
            RUNAWAY,
            "data.policy.allow",
            input={},
            data=None,
            reference_values=None,
            seconds=0.5,
        )
    assert time.monotonic() - started < 5
    # The stopped worker was killed and its slot freed: the pool serves again, within bound.
    for _ in range(4):
        got = pool.run(
            "evaluate",
            ALLOW_IF_ADMIN,
            "data.policy.allow",
            input={"role": "admin"},
            data=None,
            reference_values=None,
            seconds=5,
        )
        assert got is True
    assert pool._started <= 2


# One allocation of about 2.4 GB: over the worker's address-space limit at once.
MEMORY_HOG = """
package policy

import rego.v1

allow if {
    x := [i | some i in numbers.range(1, 100000000)]
    count(x) > 0
}
"""


def test_a_policy_over_the_memory_limit_fails_and_the_pool_recovers(
    pool: BudgetedEvaluator,
) -> None:
    def run(policy: str) -> object:
        return pool.run(
            "evaluate",
            policy,
            "data.policy.allow",
            input={"role": "admin"},
            data=None,
            reference_values=None,
            seconds=10,
        )

    with pytest.raises(PolicyError, match="memory limit"):
        run(MEMORY_HOG)
    assert run(ALLOW_IF_ADMIN) is True


def test_a_forked_child_neither_shares_nor_stops_its_parents_workers() -> None:
    import atexit
    import os

    from custodes.policy.budget import evaluator

    assert evaluate_within_budget(ALLOW_IF_ADMIN, "data.policy.allow", input={"role": "admin"})
    parent = evaluator()
    pid = os.fork()
    if pid == 0:  # the child: its own evaluator; its exit runs atexit and must spare the parent's
        ok = evaluator() is not parent and evaluate_within_budget(
            ALLOW_IF_ADMIN, "data.policy.allow", input={"role": "admin"}
        )
        atexit._run_exitfuncs()  # what the child's exit would run
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert evaluator() is parent
    assert evaluate_within_budget(ALLOW_IF_ADMIN, "data.policy.allow", input={"role": "admin"})


def test_a_shipped_policy_runs_in_this_thread_and_a_changed_copy_in_a_worker(
    pool: BudgetedEvaluator,
) -> None:
    from custodes.policy.budget import is_shipped
    from custodes.policy.defaults import default_policy

    shipped = default_policy("resource_policy")
    changed = shipped + "\n# a tenant's copy, changed by one comment\n"
    assert is_shipped(shipped)
    assert not is_shipped(changed)
    claims = {"submods": {"cpu0": {"ear.status": "affirming"}}}
    data = {"plugin": "resource", "resource-path": ["a", "b", "c"], "query": {}}

    def run(policy: str) -> object:
        return pool.run(
            "evaluate",
            policy,
            "data.policy.allow",
            input=claims,
            data=data,
            reference_values=None,
            seconds=5.0,
        )

    in_thread = run(shipped)
    assert pool._started == 0  # no worker process was needed
    in_worker = run(changed)
    assert pool._started == 1
    expected = RegoEngine.evaluate(shipped, "data.policy.allow", input=claims, data=data)
    assert in_thread == in_worker == expected


def test_workers_run_below_the_brokers_cpu_priority(pool: BudgetedEvaluator) -> None:
    # A tenant's slow policy must leave the cores to the broker serving the other tenants.
    import os

    from custodes.policy.rego_worker import NICENESS

    assert pool.run(
        "evaluate",
        ALLOW_IF_ADMIN,
        "data.policy.allow",
        input={"role": "admin"},
        data=None,
        reference_values=None,
        seconds=5.0,
    )
    (worker,) = pool._idle
    parent = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, worker.process.pid) == min(parent + NICENESS, 19)
