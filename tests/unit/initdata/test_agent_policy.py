"""The Kata agent policy in init-data is read by the Rego engine, not by a text search.

The attack (outside review, issue 12 #1): a cluster admin ships a real ``policy_data`` that
allows any image, followed by ``# policy_data := {...approved image...}``. The agent enforces
the real one; a text search for the last ``policy_data := {`` reported the comment in
``agent_policy_claims``, so an attestation policy pinning the approved image was satisfied.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from custodes.initdata.agent_policy import AgentPolicyError, parse_agent_policy
from custodes.initdata.format import InitData

H = "package agent_policy\n"
REAL = '{"allowed_images": ["*"], "allowed_commands": []}'
FAKE = '{"allowed_images": ["quay.io/approved@sha256:aa"], "allowed_commands": []}'
INTEGRATION = "trustee/integration-tests/tests/init-data-with-policy.toml"


def _init_data(policy: str) -> InitData:
    return InitData.parse(
        'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = \'\'\'\n'
        + policy
        + "'''\n"
    )


def _vector_policy(vectors: Path) -> str:
    data = tomllib.loads((vectors / INTEGRATION).read_text(encoding="utf-8"))["data"]
    policy = data["policy.rego"]
    assert isinstance(policy, str)
    return policy


def test_trailing_comment_is_not_the_policy_data() -> None:
    policy = f"{H}policy_data := {REAL}\n# policy_data := {FAKE}\n"
    claims = _init_data(policy).claims()
    assert claims["agent_policy_claims"] == {"allowed_images": ["*"], "allowed_commands": []}


def test_trailing_comment_after_a_real_genpolicy_policy(vectors: Path) -> None:
    real = _vector_policy(vectors)
    original = _init_data(real).claims()["agent_policy_claims"]
    assert isinstance(original, dict) and set(original) == {
        "common",
        "containers",
        "request_defaults",
        "sandbox",
    }
    forged = _init_data(real + f"\n# policy_data := {FAKE}\n").claims()["agent_policy_claims"]
    assert forged == original


def test_mention_in_a_string_is_not_the_policy_data() -> None:
    policy = f'{H}note := "policy_data := {{}}"\npolicy_data := {REAL}\n'
    assert parse_agent_policy(policy).policy_data == {
        "allowed_images": ["*"],
        "allowed_commands": [],
    }


def test_vectors(vectors: Path) -> None:
    module = parse_agent_policy(_vector_policy(vectors))
    assert module.policy_data is not None and "containers" in module.policy_data
    assert module.defaults["ExecProcessRequest"] is False
    assert module.defaults["DestroySandboxRequest"] is True
    assert "CreateContainerRequest" in module.rules
    website = tomllib.loads(
        (vectors / "guest-components/initdata/website-initdata-example.toml").read_text()
    )["data"]["policy.rego"]
    module = parse_agent_policy(website)
    assert module.policy_data is None  # no policy_data: no claims
    assert module.rules == {"CreateContainerRequest", "ExecProcessRequest"}
    assert module.defaults["ExecProcessRequest"] is False


def test_policy_without_policy_data_has_no_claims() -> None:
    assert _init_data(f"{H}default ExecProcessRequest := false\n").claims() == {}


def test_rego_v0_policy_is_read_as_v0() -> None:
    module = parse_agent_policy(f"{H}ExecProcessRequest {{ true }}\npolicy_data := {REAL}\n")
    assert module.policy_data == {"allowed_images": ["*"], "allowed_commands": []}
    assert "ExecProcessRequest" in module.rules


def test_json_values_as_evaluated() -> None:
    policy = f'{H}policy_data := {{"a": [1, -2.5, true, null, "\\u00e9"], "b": {{}}, "c": `x`}}\n'
    assert parse_agent_policy(policy).policy_data == {
        "a": [1, -2.5, True, None, "é"],
        "b": {},
        "c": "x",
    }


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        (f"{H}policy_data := {REAL}\npolicy_data := {FAKE}\n", "2 times"),
        (f"{H}default policy_data := {{}}\npolicy_data := {REAL}\n", "2 times"),
        (f'{H}policy_data[k] := 1 if {{ k := "a" }}\n', "one constant object"),
        (f"{H}policy_data.allowed_images := []\n", "one constant object"),
        (f"{H}policy_data contains 1\n", "one constant object"),
        (f"{H}policy_data(x) := {REAL}\n", "one constant object"),
        (f"{H}policy_data := {REAL} if {{ input.x }}\n", "one constant object"),
        (f"{H}policy_data := {REAL} if {{ false }} else := {FAKE}\n", "one constant object"),
        (f'{H}x := ["*"]\npolicy_data := {{"allowed_images": x}}\n', "var"),
        (f'{H}policy_data := {{"a": input.images}}\n', "constant"),
        (f'{H}policy_data := {{"a": count([1])}}\n', "constant"),
        (f'{H}policy_data := {{"a": [x | x := 1]}}\n', "constant"),
        (f'{H}policy_data := {{"a": {{1}}}}\n', "set"),
        (f"{H}policy_data := {{1: 2}}\n", "not a string"),
        (f'{H}policy_data := {{"a": 1, "a": 2}}\n', "twice"),
        (f"{H}policy_data := [1]\n", "one constant object"),
        (f"{H}policy_data := {REAL}\nA if {{ input.a with policy_data as {FAKE} }}\n", "with"),
        (f"{H}policy_data := {REAL}\nA if {{ input.a with data.agent_policy as {{}} }}\n", "with"),
        (f"{H}policy_data := {REAL}\nA if {{ input.a with data as {{}} }}\n", "with"),
        (f"{H}import data.other as policy_data\n", "import"),
        (f"package other\npolicy_data := {REAL}\n", "package agent_policy"),
        (f"policy_data := {REAL}\n", "does not compile"),
        (f"{H}policy_data := {{\n", "does not compile"),
        (f"{H}policy_data := " + '{"a":' * 11 + "1" + "}" * 11 + "\n", "nests brackets"),
    ],
    ids=[
        "twice",
        "default-and-rule",
        "partial-object",
        "ref-head",
        "partial-set",
        "function",
        "body",
        "else",
        "variable",
        "input-ref",
        "call",
        "comprehension",
        "set-value",
        "number-key",
        "duplicate-key",
        "array",
        "with-policy-data",
        "with-package",
        "with-data",
        "import-alias",
        "other-package",
        "no-package",
        "syntax",
        "too-deep",
    ],
)
def test_ambiguous_policies_are_refused(policy: str, why: str) -> None:
    with pytest.raises(AgentPolicyError, match=why):
        parse_agent_policy(policy)
    with pytest.raises(AgentPolicyError):  # and the claims of the init-data carrying it
        _init_data(policy).claims()


def test_with_on_input_is_fine() -> None:
    policy = f"{H}policy_data := {REAL}\nA if {{ input.a with input.b as 1 }}\n"
    assert parse_agent_policy(policy).policy_data is not None


def test_results_are_cached_per_text() -> None:
    policy = f"{H}policy_data := {REAL}\n# cache probe\n"
    assert parse_agent_policy(policy) is parse_agent_policy(policy)
    refused = f"{H}policy_data := [1]\n# cache probe\n"
    for _ in range(2):
        with pytest.raises(AgentPolicyError, match="one constant object"):
            parse_agent_policy(refused)


def test_claims_are_a_copy_of_the_cached_policy_data() -> None:
    policy = f"{H}policy_data := {REAL}\n# copy probe\n"
    first = _init_data(policy).claims()["agent_policy_claims"]
    assert isinstance(first, dict)
    first["allowed_images"] = ["mutated"]
    assert _init_data(policy).claims()["agent_policy_claims"] == {
        "allowed_images": ["*"],
        "allowed_commands": [],
    }


def test_policy_too_large_to_analyse_is_refused_before_regorus() -> None:
    # Dense small tokens: 1 MiB of them would be a 220 MB AST.
    row = "[" + ",".join(["1"] * 400) + "]"
    policy = H + "".join(f"r{i} := {row}\n" for i in range(200))
    started = time.monotonic()
    with pytest.raises(AgentPolicyError, match="tokens, more than the 65536"):
        parse_agent_policy(policy)
    assert time.monotonic() - started < 1
