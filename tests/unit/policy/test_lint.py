"""Resource-policy lint: each check finds its mistake, and the sound policies pass clean.

The mistake that motivated it (outside review, issue 12): ``data["resource-path"]`` is a list,
so ``data["resource-path"] == "default/key/db"`` never holds, and a deny written with it
releases every path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custodes.cli import main
from custodes.errors import PolicyError
from custodes.policy.lint import Finding, lint_resource_policy

REPO = Path(__file__).resolve().parents[3]
DEFAULT = REPO / "src/custodes/policy/defaults/resource_policy.rego"
HEAD = "package policy\nimport rego.v1\ndefault allow := false\n"
AFFIRMING = 'every _, a in input.submods { a["ear.status"] == "affirming" }'


def _deny(condition: str) -> str:
    return f"{HEAD}allow if {{\n    {AFFIRMING}\n    not denied\n}}\ndenied if {{ {condition} }}\n"


def _checks(policy: str) -> list[str]:
    return [f.check for f in lint_resource_policy(policy)]


def test_string_compared_with_the_path_list_is_found() -> None:
    findings = lint_resource_policy(_deny('data["resource-path"] == "default/key/db"'))
    first = findings[0]
    assert (first.check, first.line, first.column) == ("type-mismatch", 8, 13)
    assert "(array)" in first.message and "(string)" in first.message
    assert "never holds" in first.message and 'concat("/", data["resource-path"])' in first.message
    assert [f.check for f in findings] == ["type-mismatch", "path-ignored"]


def test_through_a_local_variable_and_not_equal() -> None:
    body = f'    {AFFIRMING}\n    p := data["resource-path"]\n    p != "a/b/c"\n'
    policy = f"{HEAD}allow if {{\n{body}}}\n"
    [mismatch, *_] = lint_resource_policy(policy)
    assert mismatch.check == "type-mismatch" and "always holds" in mismatch.message
    assert (mismatch.line, mismatch.column) == (7, 5)


@pytest.mark.parametrize(
    "condition",
    [
        'data["resource-path"][2] == 3',
        "data.plugin == true",
        'input.submods.cpu0["ear.trustworthiness-vector"].hardware == "2"',
        'count(data["resource-path"]) == "3"',
        'concat("/", data["resource-path"]) == ["default", "key", "db"]',
        'data["resource-path"] = "default/key/db"',
    ],
)
def test_other_type_mismatches(condition: str) -> None:
    assert "type-mismatch" in _checks(_deny(condition))


@pytest.mark.parametrize(
    "condition",
    [
        'data["resource-path"] == ["default", "key", "db"]',
        'data["resource-path"][2] == "db"',
        'concat("/", data["resource-path"]) == "default/key/db"',
        'startswith(data["resource-path"][2], "admin-")',
        'input.submods.cpu0["ear.trustworthiness-vector"].hardware == 2',
    ],
)
def test_sound_deny_rules_pass(condition: str) -> None:
    assert lint_resource_policy(_deny(condition)) == []


def test_shipped_default_passes() -> None:
    assert lint_resource_policy(DEFAULT.read_text()) == []


def test_default_allow_true() -> None:
    policy = 'package policy\ndefault allow := true\nallow := false if { data.plugin == "x" }\n'
    findings = lint_resource_policy(policy)
    assert findings[0] == Finding("default-allow", 2, 1, findings[0].message)
    assert "allows-unappraised" in [f.check for f in findings]


def test_release_without_an_affirming_appraisal() -> None:
    policy = "package policy\ndefault allow := false\nallow if { input.submods.cpu0 }\n"
    [finding] = lint_resource_policy(policy)
    assert finding.check == "allows-unappraised" and finding.line == 0
    assert "contraindicated" in finding.message


def test_path_conditions_that_never_change_the_decision() -> None:
    # A typo (trailing slash), no type mismatch: only evaluation shows the deny is dead.
    policy = _deny('concat("/", data["resource-path"]) == "default/key/admin/"')
    assert _checks(policy) == ["path-ignored"]


def test_evaluation_error_is_reported() -> None:
    policy = f"{HEAD}allow if {{\n    {AFFIRMING}\n    to_number(data.plugin) > 0\n}}\n"
    assert _checks(policy) == ["evaluation-error"]


def test_not_a_resource_policy_or_not_compiling() -> None:
    with pytest.raises(PolicyError, match="no `allow` rule"):
        lint_resource_policy("package policy\ntrust_claims := {}\n")
    with pytest.raises(PolicyError, match="compile"):
        lint_resource_policy("package policy\nallow if {\n")


# --- the command --------------------------------------------------------------------------


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text(_deny('data["resource-path"] == "default/key/db"'))
    assert main(["policy", "lint", str(bad)]) == 3
    out = capsys.readouterr().out
    assert out.startswith(f"{bad}: line 8, column 13: ") and "[type-mismatch]" in out
    assert main(["policy", "lint", "-o", "json", str(bad)]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == str(bad)
    assert [f["check"] for f in report["findings"]] == ["type-mismatch", "path-ignored"]
    assert main(["policy", "lint", str(DEFAULT)]) == 0
    assert capsys.readouterr().out == f"{DEFAULT}: no findings\n"


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    attestation = tmp_path / "a.rego"
    attestation.write_text("package policy\ntrust_claims := {}\n")
    for path in (attestation, tmp_path / "absent.rego"):
        assert main(["policy", "lint", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("custodes: error: ") and err.count("\n") == 1
        assert "Traceback" not in err
