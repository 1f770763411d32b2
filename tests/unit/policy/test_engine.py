"""The Rego engine adapter on real regorus: compile checks, evaluation, builtins, errors, and
every policy upstream ships or tests with."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from custodes.errors import PolicyError, StorageError
from custodes.policy.engine import MAX_POLICY_BYTES, UNDEFINED, RegoEngine

POLICY = """
package policy

import rego.v1

default allow := false

allow if {
    input.user == data.owner
}

names := {n | some n in input.names}

checked := lookup(input.user)
"""

UPSTREAM_POLICY_DIRS = (
    "trustee/kbs/sample_policies",
    "trustee/deps/policy-engine/test_data",
    "trustee/attestation-service/src/ear_token",
    "trustee/attestation-service/tests/policy",
    "trustee/attestation-service/tests/coco-as/policy",
    "trustee/attestation-service/tests/coco-as/policy/opa",
)


def _upstream_policies(vectors: Path) -> list[Path]:
    found = [p for d in UPSTREAM_POLICY_DIRS for p in sorted((vectors / d).glob("*.rego"))]
    assert len(found) >= 19
    return found


# --- check ---------------------------------------------------------------------------------


def test_check_accepts_a_v1_policy() -> None:
    RegoEngine.check(POLICY)


def test_every_upstream_policy_compiles_in_v1(vectors: Path) -> None:
    # Including those without `import rego.v1` that write `default allow = false`: no v0
    # fallback is needed.
    for path in _upstream_policies(vectors):
        RegoEngine.check(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "policy",
    [
        "package policy\nallow { true }\n",  # Rego v0 body without `if`
        "package policy\nallow if {\n",  # syntax error
        "allow := true\n",  # no package
        "package kbs\nallow := true\n",  # another package
        "package policy.sub\nallow := true\n",
    ],
)
def test_check_refuses(policy: str) -> None:
    with pytest.raises(PolicyError):
        RegoEngine.check(policy)


def test_check_refuses_oversized_policy() -> None:
    policy = "package policy\n# " + "x" * MAX_POLICY_BYTES + "\n"
    with pytest.raises(PolicyError):
        RegoEngine.check(policy)


def test_compiler_message_is_kept_without_backtrace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    with pytest.raises(PolicyError) as info:
        RegoEngine.check("package policy\nallow { true }\n")
    assert "`if` keyword is required" in str(info.value)
    assert "Stack backtrace" not in str(info.value)


# --- evaluate ------------------------------------------------------------------------------


def _lookup(name: object) -> object:
    return {"alice": "ok"}.get(name) if isinstance(name, str) else None


BUILTINS = {"lookup": (1, _lookup)}


def test_evaluate_values() -> None:
    inp = {"user": "alice", "names": ["b", "a", "b"]}
    assert RegoEngine.evaluate(POLICY, "data.policy.allow", input=inp, data={"owner": "alice"})
    assert (
        RegoEngine.evaluate(POLICY, "data.policy.allow", input=inp, data={"owner": "bob"}) is False
    )
    # Sets come back as JSON arrays.
    assert RegoEngine.evaluate(POLICY, "data.policy.names", input=inp) == ["a", "b"]
    assert RegoEngine.evaluate(POLICY, "data.policy.checked", input=inp, builtins=BUILTINS) == "ok"


def test_undefined() -> None:
    assert RegoEngine.evaluate(POLICY, "data.policy.nothing", input={}) is UNDEFINED
    # A builtin returning null makes `checked` null, not undefined.
    value = RegoEngine.evaluate(
        POLICY, "data.policy.checked", input={"user": "eve"}, builtins=BUILTINS
    )
    assert value is None
    assert not UNDEFINED
    assert repr(UNDEFINED) == "UNDEFINED"


def test_evaluations_do_not_share_state() -> None:
    assert RegoEngine.evaluate(
        POLICY, "data.policy.allow", input={"user": "a"}, data={"owner": "a"}
    )
    # Same cached policy: neither the earlier data nor the earlier builtin may leak.
    assert RegoEngine.evaluate(POLICY, "data.policy.allow", input={"user": "a"}) is False
    with pytest.raises(PolicyError):
        RegoEngine.evaluate(POLICY, "data.policy.checked", input={"user": "alice"})


def test_builtin_receives_arguments_and_may_return_any_json() -> None:
    seen: list[object] = []

    def lookup(name: object) -> object:
        seen.append(name)
        return {"list": [1, "two", None, True], "n": 2.5}

    value = RegoEngine.evaluate(
        POLICY, "data.policy.checked", input={"user": "x"}, builtins={"lookup": (1, lookup)}
    )
    assert seen == ["x"]
    assert value == {"list": [1, "two", None, True], "n": 2.5}


def test_builtin_custodes_error_propagates_as_itself() -> None:
    def broken(name: object) -> object:
        raise StorageError("database is down")

    with pytest.raises(StorageError):
        RegoEngine.evaluate(
            POLICY, "data.policy.checked", input={"user": "x"}, builtins={"lookup": (1, broken)}
        )


def test_builtin_bug_is_a_policy_error() -> None:
    def broken(name: object) -> object:
        raise KeyError(name)

    with pytest.raises(PolicyError):
        RegoEngine.evaluate(
            POLICY, "data.policy.checked", input={"user": "x"}, builtins={"lookup": (1, broken)}
        )


@pytest.mark.parametrize(
    ("policy", "query"),
    [
        ("package policy\nx := 1 / 0\n", "data.policy.x"),  # runtime error
        ("package policy\nx := 1\nx := 2\n", "data.policy.x"),  # conflicting values
        ("package policy\nx := unknown_fn(1)\n", "data.policy.x"),  # unknown function
        ("package policy\nx := 1\n", "data.policy.x["),  # bad query
        ("package policy\nx := [1, 2]\n", "data.policy.x[_]"),  # several results
    ],
)
def test_evaluation_errors(policy: str, query: str) -> None:
    with pytest.raises(PolicyError):
        RegoEngine.evaluate(policy, query, input={})


def test_data_must_be_an_object() -> None:
    with pytest.raises(PolicyError):
        RegoEngine.evaluate(POLICY, "data.policy.allow", input={}, data=[1])


def test_evaluate_refuses_a_policy_that_does_not_compile() -> None:
    with pytest.raises(PolicyError):
        RegoEngine.evaluate("package policy\nallow { true }\n", "data.policy.allow", input={})


# --- upstream policies behave as upstream documents them ---------------------------------


def _resource_input(sample: bool) -> dict[str, object]:
    tee = "sample" if sample else "snp"
    return {
        "submods": {
            "cpu0": {
                "ear.status": "contraindicated",
                "ear.veraison.annotated-evidence": {tee: {"productId": "p", "svn": 3}},
            }
        }
    }


def _rp_data(path: list[str], plugin: str = "resource") -> dict[str, object]:
    return {"plugin": plugin, "resource-path": path, "query": {}}


def test_upstream_kbs_sample_policies(vectors: Path) -> None:
    d = vectors / "trustee/kbs/sample_policies"

    def allow(name: str, inp: object, data: object) -> object:
        return RegoEngine.evaluate(
            (d / f"{name}.rego").read_text(), "data.policy.allow", input=inp, data=data
        )

    path = ["repo", "key", "tag"]
    # default.rego: any non-sample TEE, whatever its appraisal (the unsafe default).
    assert allow("default", _resource_input(False), _rp_data(path)) is True
    assert allow("default", _resource_input(True), _rp_data(path)) is False
    assert allow("allow_all", _resource_input(True), _rp_data(path)) is True
    assert allow("allow_all", _resource_input(True), _rp_data(path, "other")) is False
    assert allow("deny_all", _resource_input(False), _rp_data(path)) is False
    assert allow("affirming", _resource_input(False), _rp_data(path)) is False


def test_upstream_policy_engine_test_policies(vectors: Path) -> None:
    d = vectors / "trustee/deps/policy-engine/test_data"

    def allow(name: str, inp: object, data: object) -> object:
        return RegoEngine.evaluate(
            (d / f"{name}.rego").read_text(), "data.policy.allow", input=inp, data=data
        )

    inp = _resource_input(True)
    assert allow("policy_1", inp, _rp_data(["r", "p", "t"])) is True
    assert allow("policy_1", inp, _rp_data(["r", "q", "t"])) is False
    assert allow("policy_2", inp, _rp_data([])) is True
    assert allow("policy_3", inp, _rp_data([])) is False
    assert allow("policy_4", inp, _rp_data(["r", "p", "t"])) is True
    assert allow("policy_5", inp, _rp_data(["myrepo", "secret", "secret1"])) is True
    assert allow("policy_5", inp, _rp_data(["myrepo", "secret", "secret2"])) is True
    inp["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["sample"]["svn"] = 2  # type: ignore[index]
    assert allow("policy_5", inp, _rp_data(["myrepo", "secret", "secret2"])) is False


def test_evaluation_from_worker_threads() -> None:
    # regorus engines may not cross threads; the broker evaluates in a thread pool.
    inp = {"user": "alice", "names": []}
    assert RegoEngine.evaluate(POLICY, "data.policy.allow", input=inp, data={"owner": "alice"})

    def run(i: int) -> object:
        owner = "alice" if i % 2 == 0 else "bob"
        return RegoEngine.evaluate(POLICY, "data.policy.allow", input=inp, data={"owner": owner})

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(40)))
    assert results == [i % 2 == 0 for i in range(40)]
    # Threads that end take their cached engines with them.
    thread = threading.Thread(target=run, args=(0,))
    thread.start()
    thread.join()
    assert (
        RegoEngine.evaluate(POLICY, "data.policy.allow", input=inp, data={"owner": "bob"}) is False
    )


def test_non_text_policy_refused() -> None:
    with pytest.raises(PolicyError):
        RegoEngine.check({"package": "policy"})  # type: ignore[arg-type]
