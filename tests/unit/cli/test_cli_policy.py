"""``custodes policy test`` through the real ``custodes`` entry point.

The shipped ``default_cpu`` policy on sample evidence (with the reference values a broker
needs for it, then with a changed ``svn``), a recorded attestation from a real broker's audit
log replayed against a stricter candidate, the upstream TPM vector with and without
``trusted_aks``, resource policies on a real broker's token, and every error a policy author
can make: each a clear message with the right exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from custodes.attestation.ear import AR4SI_MEANINGS, meaning
from custodes.cli import COMMANDS, main
from custodes.cli.policy import EXIT_REFUSED, entry_ref
from custodes.errors import ConfigError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.policy.defaults import default_policy
from custodes.policy.dry_run import decode_token_or_json
from custodes.protocol.binding import DEFAULT_HASH_ALGORITHM, runtime_data_digest
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import SAMPLE_REFERENCE_VALUES, LiveBroker

TPM_VECTOR = Path("trustee/deps/verifier/test_data/tpm_evidence.json")
TPM_EXTRA_DATA_OFFSET = 4 + 2 + 2 + 34  # magic, type, qualifiedSigner (TPM2B, 34 bytes)
REPORT_DATA = bytes(range(48))
SVN_CONDITION = 'accepted(input.sample.svn, "svn")'
# The shipped policy with a stricter executables rule: a reference value no broker has yet.
EXECUTABLES_RULE = """executables := 3 if {
	input.sample
	accepted(input.sample.launch_digest, "launch_digest")
}"""
STRICTER_RULE = """executables := 3 if {
	input.sample
	accepted(input.sample.launch_digest, "approved_launch_digests")
	input.sample.debug == false
}"""
SVN_LINE = 1 + default_policy("default_cpu").splitlines().index(f"\t{SVN_CONDITION}")
STRICTER_CONDITION = 'accepted(input.sample.launch_digest, "approved_launch_digests")'

Run = tuple[int, str, str]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``custodes ARGS`` in this process: (exit code, stdout, stderr), never a traceback."""

    def run(*argv: str | Path) -> Run:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors
            code = int(e.code) if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def _write(path: Path, obj: object) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The shipped policies, sample evidence bound to REPORT_DATA and reference values."""
    stricter = default_policy("default_cpu").replace(EXECUTABLES_RULE, STRICTER_RULE)
    assert stricter != default_policy("default_cpu")
    return {
        "cpu": _write(tmp_path / "default_cpu.rego", default_policy("default_cpu")),
        "resource": _write(tmp_path / "resource.rego", default_policy("resource_policy")),
        "stricter": _write(tmp_path / "stricter.rego", stricter),
        "evidence": _write(tmp_path / "evidence.json", SampleAttester().evidence(REPORT_DATA)),
        "rv": _write(tmp_path / "rv.json", SAMPLE_REFERENCE_VALUES),
        "rv_svn2": _write(tmp_path / "rv-svn2.json", {**SAMPLE_REFERENCE_VALUES, "svn": ["2"]}),
    }


def _sample(cli: Any, files: dict[str, Path], *extra: str | Path) -> Run:
    result: Run = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", files["evidence"],
        "--tee", "sample", "--report-data", REPORT_DATA.hex(), *extra,
    )  # fmt: skip
    return result


def test_command_is_registered() -> None:
    assert COMMANDS["policy"] == (
        "custodes.cli.policy",
        "test a candidate policy against recorded evidence or attestations",
    )


# --- recorded evidence, sample TEE ------------------------------------------------------------


def test_default_cpu_affirms_sample_evidence_with_reference_values(
    cli: Any, files: dict[str, Path]
) -> None:
    code, out, err = _sample(cli, files, "--reference-values", files["rv"])
    assert code == 0
    assert "decision: affirming" in out
    assert "hardware              2  affirming        genuine hardware" in out
    assert "executables           3  affirming        approved boot" in out
    assert "reference values consulted:" in out
    assert 'svn = ["1"]' in out
    assert 'launch_digest = ["abcde"]' in out
    assert "nothing was activated or sent anywhere" in out
    assert "INSECURE" in err  # the sample TEE proves nothing, and says so


def test_changed_svn_reference_value_is_contraindicated_with_trace(
    cli: Any, files: dict[str, Path]
) -> None:
    code, out, _ = _sample(cli, files, "--reference-values", files["rv_svn2"])
    assert code == EXIT_REFUSED
    assert "decision: contraindicated" in out
    assert "hardware = 97: unrecognized hardware" in out
    assert f"failed condition (rule hardware, line {SVN_LINE}): {SVN_CONDITION}" in out
    assert 'claim input.sample.svn = "1"' in out
    assert 'reference value svn = ["2"]' in out


def test_changed_svn_json_output(cli: Any, files: dict[str, Path]) -> None:
    code, out, _ = _sample(cli, files, "--reference-values", files["rv_svn2"], "--json")
    assert code == EXIT_REFUSED
    report = json.loads(out)
    assert report["decision"] == "contraindicated"
    assert report["refused"] is True
    assert report["activated"] is False
    cpu0 = report["submods"]["cpu0"]
    assert cpu0["trust_vector"]["hardware"] == {
        "value": 97,
        "tier": "contraindicated",
        "meaning": meaning("hardware", 97),
    }
    assert cpu0["failed"]["hardware"] == [
        {
            "rule": "hardware",
            "line": SVN_LINE,
            "condition": SVN_CONDITION,
            "claims": {"input.sample.svn": "1"},
            "reference_values": {"svn": ["2"]},
        }
    ]
    assert cpu0["reference_values_consulted"] == {"launch_digest": ["abcde"], "svn": ["2"]}
    assert cpu0["extensions"] == {"ear.trustee.identifiers": {"validated": {}}}


def test_without_reference_values_nothing_is_trusted(cli: Any, files: dict[str, Path]) -> None:
    code, out, _ = _sample(cli, files, "--json")
    assert code == EXIT_REFUSED
    report = json.loads(out)
    assert report["decision"] == "contraindicated"
    assert report["submods"]["cpu0"]["reference_values_consulted"]["svn"] is None
    assert "no --reference-values: every reference value reads as null" in report["notes"]


def test_nonce_and_tee_pubkey_give_the_policy_runtime_data(
    cli: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    jwk = TeeKeyPair.generate("ec-p256").public_jwk()
    digest = runtime_data_digest("n-123", jwk, "", DEFAULT_HASH_ALGORITHM)
    evidence = _write(tmp_path / "bound.json", SampleAttester().evidence(digest))
    policy = _write(
        tmp_path / "nonce.rego",
        "package policy\nimport rego.v1\ndefault executables := 33\n"
        'executables := 3 if {\n\tinput.sample\n\tinput.runtime_data_claims.nonce == "n-123"\n}\n'
        'trust_claims := {"executables": executables}\n',
    )
    code, out, _ = cli(
        "policy", "test", "--policy", policy, "--evidence", evidence, "--tee", "sample",
        "--nonce", "n-123", "--tee-pubkey", json.dumps(jwk), "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["submods"]["cpu0"]["trust_vector"]["executables"]["value"] == 3


def test_init_data_claims_reach_the_policy(cli: Any, tmp_path: Path) -> None:
    init_data = _write(
        tmp_path / "initdata.toml",
        'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"note" = "offline"\n',
    )
    evidence = _write(tmp_path / "ev.json", SampleAttester().evidence(REPORT_DATA))
    policy = _write(
        tmp_path / "initdata.rego",
        "package policy\nimport rego.v1\ndefault configuration := 36\n"
        'configuration := 2 if {\n\tinput.sample\n\tinput.init_data_claims.note == "offline"\n}\n'
        'trust_claims := {"configuration": configuration}\n',
    )
    code, out, _ = cli(
        "policy", "test", "--policy", policy, "--evidence", evidence, "--tee", "sample",
        "--report-data", REPORT_DATA.hex(), "--init-data", init_data,
    )  # fmt: skip
    assert code == 0
    assert "configuration         2  affirming" in out


def test_evidence_that_does_not_verify(cli: Any, files: dict[str, Path]) -> None:
    code, out, err = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", files["evidence"],
        "--tee", "sample", "--report-data", "00" * 48,
    )  # fmt: skip
    assert code == 1
    assert out == ""
    assert "evidence invalid: step report-data (binding-mismatch)" in err


def test_evidence_that_is_not_json(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.json", "{not json")
    code, _, err = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", bad,
        "--tee", "sample", "--report-data", REPORT_DATA.hex(),
    )  # fmt: skip
    assert code == 1
    assert "evidence invalid: step parse (malformed-evidence)" in err


# --- the TPM vector ---------------------------------------------------------------------------


@pytest.fixture
def tpm(vectors: Path, tmp_path: Path) -> dict[str, Any]:
    """The upstream TPM evidence; the binding is its quoted extraData itself (the vector's
    binding digest is not published; test_cli_evidence.py does the same)."""
    path = vectors / TPM_VECTOR
    evidence = json.loads(path.read_text())
    message = base64.b64decode(evidence["tpm_quote"]["message"])
    size = int.from_bytes(message[TPM_EXTRA_DATA_OFFSET : TPM_EXTRA_DATA_OFFSET + 2], "big")
    extra = message[TPM_EXTRA_DATA_OFFSET + 2 : TPM_EXTRA_DATA_OFFSET + 2 + size]
    return {"path": path, "report_data": extra.hex(), "ak_public": evidence["ak_public"]}


def _tpm(cli: Any, files: dict[str, Path], tpm: dict[str, Any], rv: Path) -> Run:
    result: Run = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", tpm["path"], "--tee", "tpm",
        "--report-data", tpm["report_data"], "--reference-values", rv, "--json",
    )  # fmt: skip
    return result


def test_tpm_vector_with_trusted_aks_affirms(
    cli: Any, files: dict[str, Path], tpm: dict[str, Any], tmp_path: Path
) -> None:
    rv = _write(
        tmp_path / "tpm-rv.json", {"tpm_pcr11": ["00" * 32], "trusted_aks": [tpm["ak_public"]]}
    )
    code, out, _ = _tpm(cli, files, tpm, rv)
    assert code == 0
    cpu0 = json.loads(out)["submods"]["cpu0"]
    assert cpu0["status"] == "affirming"
    assert cpu0["trust_vector"]["executables"]["value"] == 3
    assert cpu0["trust_vector"]["hardware"]["value"] == 2
    assert cpu0["reference_values_consulted"]["trusted_aks"] == [tpm["ak_public"]]


def test_tpm_vector_without_trusted_aks_is_a_warning(
    cli: Any, files: dict[str, Path], tpm: dict[str, Any], tmp_path: Path
) -> None:
    rv = _write(tmp_path / "tpm-rv.json", {"tpm_pcr11": ["00" * 32]})
    code, out, _ = _tpm(cli, files, tpm, rv)
    assert code == EXIT_REFUSED
    report = json.loads(out)
    assert report["decision"] == "warning"
    cpu0 = report["submods"]["cpu0"]
    assert cpu0["trust_vector"]["executables"] == {
        "value": 33,
        "tier": "warning",
        "meaning": meaning("executables", 33),
    }
    assert cpu0["reference_values_consulted"] == {
        "tpm_pcr11": ["00" * 32],
        "trusted_aks": None,
    }


def test_tpm_vector_without_trusted_aks_text_names_the_null_value(
    cli: Any, files: dict[str, Path], tpm: dict[str, Any], tmp_path: Path
) -> None:
    rv = _write(tmp_path / "tpm-rv.json", {"tpm_pcr11": ["00" * 32]})
    code, out, _ = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", tpm["path"], "--tee", "tpm",
        "--report-data", tpm["report_data"], "--reference-values", rv,
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "executables = 33: unrecognized runtime" in out
    # The failed condition is the body's last line: named with its claim and null value.
    assert 'accepted(input.tpm.ak_public, "trusted_aks")' in out
    assert "reference value trusted_aks = null" in out
    assert "trusted_aks = null (not provided)" in out


# --- a recorded attestation, from a real broker's audit log ---------------------------------


@pytest.fixture
def recorded(broker: LiveBroker, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Attest with the sample TEE at a real broker; export its audit log and key."""
    with KbsClient(broker.url, SampleAttester()) as client:
        token = client.attest()
    with broker.admin() as admin:
        export = admin.export_audit()
        key = admin.audit_public_key()
    audit = tmp_path / "audit.jsonl"
    audit.write_bytes(export)
    entries = [json.loads(line) for line in export.splitlines()]
    seqs = {e["kind"]: e["seq"] for e in entries}
    yield {
        "audit": audit,
        "entries": entries,
        "attestation": seqs["attestation"],
        "admin": seqs["admin"],
        "key": _write(tmp_path / "audit.pem", key.decode()),
        "token": token.value,
    }


def test_replay_against_the_active_policy_changes_nothing(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any]
) -> None:
    code, out, _ = cli(
        "policy", "test", "--policy", files["cpu"],
        "--attestation", f"{recorded['audit']}:{recorded['attestation']}",
        "--reference-values", files["rv"], "--audit-key", recorded["key"],
    )  # fmt: skip
    assert code == 0
    assert "recorded by the broker (policy version 1): affirming" in out
    assert "would not change: affirming" in out
    assert "note: audit export verified" in out


def test_replay_against_a_stricter_candidate(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any]
) -> None:
    code, out, _ = cli(
        "policy", "test", "--policy", files["stricter"],
        "--attestation", f"{recorded['audit']}:{recorded['attestation']}",
        "--reference-values", files["rv"],
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "decision: warning" in out
    assert "would change: affirming -> warning" in out
    assert "(recorded: 3)" in out
    assert STRICTER_CONDITION in out
    assert 'claim input.sample.launch_digest = "abcde"' in out
    assert "reference value approved_launch_digests = null" in out
    assert "entry not verified (pass --audit-key" in out


def test_replay_json_names_the_recorded_decision(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any]
) -> None:
    code, out, _ = cli(
        "policy", "test", "--policy", files["stricter"], "--json",
        "--attestation", f"{recorded['audit']}:{recorded['attestation']}",
        "--reference-values", files["rv"],
    )  # fmt: skip
    assert code == EXIT_REFUSED
    report = json.loads(out)
    assert report["would_change"] == "affirming -> warning"
    assert report["recorded"]["status"] == "affirming"
    assert report["recorded"]["seq"] == recorded["attestation"]
    assert report["recorded"]["policy_version"] == 1
    assert report["submods"]["cpu0"]["trust_vector"]["executables"]["recorded"] == 3
    assert report["submods"]["cpu0"]["failed"]["executables"][0]["reference_values"] == {
        "approved_launch_digests": None
    }


def test_recorded_annotated_evidence_as_claims(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    event = recorded["entries"][recorded["attestation"]]["event"]
    claims = _write(tmp_path / "annotated.json", event["annotated_evidence"]["cpu0"])
    code, out, _ = cli(
        "policy", "test", "--policy", files["cpu"], "--claims", claims,
        "--reference-values", files["rv"],
    )  # fmt: skip
    assert code == 0
    assert "decision: affirming" in out


def test_token_replayed_as_claims(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    token = _write(tmp_path / "token.jwt", recorded["token"] + "\n")
    code, out, _ = cli(
        "policy", "test", "--policy", files["cpu"], "--claims", token,
        "--reference-values", files["rv_svn2"],
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "would change: affirming -> contraindicated" in out
    assert "token signature not checked" in out
    # The input is named by its file (not by its last appraisal's name).
    assert f"input: EAR token claims {token}\n" in out


def test_replay_of_a_tampered_export_is_refused_with_the_key(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    entries = recorded["entries"]
    seq = recorded["attestation"]
    entries[seq]["event"]["annotated_evidence"]["cpu0"]["sample"]["svn"] = "9"
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, out, err = cli(
        "policy", "test", "--policy", files["cpu"], "--attestation", f"{tampered}:{seq}",
        "--audit-key", recorded["key"],
    )  # fmt: skip
    assert code == 1
    assert out == ""
    assert f"is broken at entry {seq}" in err
    assert "refusing to replay it" in err


def test_replay_of_an_entry_that_is_not_an_attestation(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any]
) -> None:
    code, _, err = cli(
        "policy", "test", "--policy", files["cpu"],
        "--attestation", f"{recorded['audit']}:{recorded['admin']}",
    )  # fmt: skip
    assert code == 1
    assert f"entry {recorded['admin']} of" in err
    assert "is not an attestation (kind admin)" in err


def test_replay_of_a_missing_entry(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any]
) -> None:
    code, _, err = cli(
        "policy", "test", "--policy", files["cpu"], "--attestation", f"{recorded['audit']}:99"
    )  # fmt: skip
    assert code == 1
    assert "has no entry 99" in err


def test_replay_of_a_failed_attestation(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    """An attestation that failed verification records no evidence to replay (the entry is
    rewritten here: only its shape is read without --audit-key)."""
    entries = recorded["entries"]
    seq = recorded["attestation"]
    entries[seq]["event"] = {
        "tee": "sample",
        "status": "error",
        "error": "BindingMismatch",
        "reason": "sample report_data does not match this session's digest",
    }
    export = _write(tmp_path / "failed.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    code, _, err = cli(
        "policy", "test", "--policy", files["cpu"], "--attestation", f"{export}:{seq}"
    )  # fmt: skip
    assert code == 1
    assert "failed before appraisal (BindingMismatch" in err
    assert "nothing to replay" in err


def test_replay_of_an_entry_without_annotated_evidence(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    entries = recorded["entries"]
    seq = recorded["attestation"]
    event = entries[seq]["event"]
    del event["annotated_evidence"]
    event["annotated_evidence_omitted"] = "over the audit entry size budget"
    export = _write(tmp_path / "big.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    code, _, err = cli(
        "policy", "test", "--policy", files["cpu"], "--attestation", f"{export}:{seq}"
    )  # fmt: skip
    assert code == 1
    assert "no annotated evidence to replay (over the audit entry size budget)" in err


# --- resource policies --------------------------------------------------------------------


def test_resource_policy_allows_an_affirming_token(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    token = _write(tmp_path / "token.jwt", recorded["token"])
    code, out, _ = cli(
        "policy", "test", "--kind", "resource", "--policy", files["resource"],
        "--claims", token, "--resource", "default/key/db-password",
    )  # fmt: skip
    assert code == 0
    assert "decision: allow" in out
    assert "appraisal: cpu0 ear.status=affirming" in out


def _token_claims(recorded: dict[str, Any], hardware: int, status: str) -> dict[str, Any]:
    payload = recorded["token"].split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    claims["submods"]["cpu0"]["ear.trustworthiness-vector"]["hardware"] = hardware
    claims["submods"]["cpu0"]["ear.status"] = status
    return claims


def test_resource_policy_denies_a_contraindicated_appraisal(
    cli: Any, files: dict[str, Path], recorded: dict[str, Any], tmp_path: Path
) -> None:
    claims = _write(tmp_path / "claims.json", _token_claims(recorded, 97, "contraindicated"))
    code, out, _ = cli(
        "policy", "test", "--kind", "resource", "--policy", files["resource"],
        "--claims", claims, "--resource", "default/key/db-password", "--json",
    )  # fmt: skip
    assert code == EXIT_REFUSED
    report = json.loads(out)
    assert report["decision"] == "deny"
    assert report["allow"] is False
    assert report["appraisal"] == "cpu0 ear.status=contraindicated (hardware=97)"


CANDIDATE_RESOURCE_POLICY = """package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	input.submods.cpu0["ear.trustworthiness-vector"].hardware == 2
	data["resource-path"][0] == "default"
}
"""


def test_candidate_resource_policy_trace_and_resource_path(
    cli: Any, recorded: dict[str, Any], tmp_path: Path
) -> None:
    policy = _write(tmp_path / "candidate.rego", CANDIDATE_RESOURCE_POLICY)
    weak = _write(tmp_path / "weak.json", _token_claims(recorded, 97, "contraindicated"))
    code, out, _ = cli(
        "policy", "test", "--kind", "resource", "--policy", policy,
        "--claims", weak, "--resource", "default/key/db-password",
    )  # fmt: skip
    assert code == EXIT_REFUSED
    assert "decision: deny" in out
    assert (
        'failed condition (rule allow, line 9): input.submods.cpu0["ear.trustworthiness-vector"]'
        ".hardware == 2"
    ) in out
    assert 'claim input.submods.cpu0["ear.trustworthiness-vector"].hardware = 97' in out
    good = _write(tmp_path / "good.json", _token_claims(recorded, 2, "affirming"))
    allowed = cli(
        "policy", "test", "--kind", "resource", "--policy", policy,
        "--claims", good, "--resource", "default/key/db-password",
    )  # fmt: skip
    assert allowed[0] == 0
    other_repo = cli(
        "policy", "test", "--kind", "resource", "--policy", policy,
        "--claims", good, "--resource", "other/key/db-password",
    )  # fmt: skip
    assert other_repo[0] == EXIT_REFUSED


# --- errors -------------------------------------------------------------------------------


def test_policy_that_does_not_compile(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    bad = _write(tmp_path / "v0.rego", "package policy\n\nallow {\n  true\n}\n")
    code, out, err = _sample(cli, {**files, "cpu": bad}, "--reference-values", files["rv"])
    assert code == 1
    assert out == ""
    assert f"custodes: error: candidate policy {bad}: policy does not compile:" in err


def test_policy_with_another_package(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    bad = _write(tmp_path / "pkg.rego", "package other\n\nimport rego.v1\n\nx := 1\n")
    code, _, err = _sample(cli, {**files, "cpu": bad})
    assert code == 1
    assert "must declare `package policy`" in err


def test_policy_without_trust_claims(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    bad = _write(tmp_path / "none.rego", "package policy\n\nimport rego.v1\n\nx := 1\n")
    code, _, err = _sample(cli, {**files, "cpu": bad})
    assert code == 1
    assert "the candidate policy does not define trust_claims" in err


def test_policy_file_missing(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = _sample(cli, {**files, "cpu": tmp_path / "nope.rego"})
    assert code == 1
    assert "cannot read policy file" in err


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"bad id!": 1}'])
def test_bad_reference_values_file(
    cli: Any, files: dict[str, Path], tmp_path: Path, text: str
) -> None:
    rv = _write(tmp_path / "rv.json", text)
    code, out, err = _sample(cli, files, "--reference-values", rv)
    assert code == 1
    assert out == ""
    assert f"reference values file {rv}" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1]", "must be a JSON object"),
        ("a.!!!.b", "nor a JWT with a base64url payload"),
    ],
)
def test_bad_claims_file(
    cli: Any, files: dict[str, Path], tmp_path: Path, text: str, message: str
) -> None:
    claims = _write(tmp_path / "claims.json", text)
    code, _, err = cli(
        "policy", "test", "--kind", "resource", "--policy", files["resource"],
        "--claims", claims, "--resource", "default/key/x",
    )  # fmt: skip
    assert code == 1
    assert message in err


def test_token_claims_without_annotated_evidence(
    cli: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    claims = _write(tmp_path / "claims.json", {"submods": {"cpu0": {"ear.status": "affirming"}}})
    code, _, err = cli("policy", "test", "--policy", files["cpu"], "--claims", claims)
    assert code == 1
    assert "appraisal cpu0 carries no annotated evidence" in err


@pytest.mark.parametrize(
    ("appraisal", "message"),
    [
        ({"ear.status": "fine"}, "cpu0: ear.status is missing or not an AR4SI tier"),
        (
            {"ear.status": "affirming", "ear.trustworthiness-vector": {"hardware": "2"}},
            "cpu0: trust claim 'hardware' is not an integer in -128..127",
        ),
    ],
)
def test_token_claims_with_a_malformed_appraisal(
    cli: Any, files: dict[str, Path], tmp_path: Path, appraisal: dict[str, Any], message: str
) -> None:
    claims = _write(tmp_path / "claims.json", {"submods": {"cpu0": appraisal}})
    code, out, err = cli("policy", "test", "--policy", files["cpu"], "--claims", claims)
    assert code == 1 and out == ""
    assert err.startswith(f"custodes: error: claims file {claims}: EAR appraisal ")
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give what to test the policy on: --evidence FILE --tee TEE"),
        (["--kind", "resource"], "give the token claims to test the resource policy on"),
        (["--evidence", "e.json", "--report-data", "00"], "--evidence needs --tee TEE"),
        (["--evidence", "e.json", "--tee", "sample"], "the binding is required"),
        (["--evidence", "e.json", "--tee", "sample", "--nonce", "n"], "go together"),
        (["--claims", "c.json", "--tee", "sample"], "--tee: only with --evidence"),
        (["--claims", "c.json", "--audit-key", "k.pem"], "--audit-key: only with --attestation"),
        (["--claims", "c.json", "--resource", "a/b/c"], "--resource: only with --kind resource"),
        (["--kind", "resource", "--claims", "c.json"], "needs the resource requested"),
        (["--kind", "resource", "--evidence", "e.json"], "use --claims FILE"),
        (["--attestation", "audit.jsonl"], "expected AUDIT.jsonl:SEQ"),
        (["--claims", "c", "--evidence", "e"], "not allowed with argument"),
        (["--evidence", "e", "--tee", "tdx", "--report-data", "00"], "needs DCAP collateral"),
    ],
)
def test_usage_errors(cli: Any, files: dict[str, Path], argv: list[str], message: str) -> None:
    code, out, err = cli("policy", "test", "--policy", files["cpu"], *argv)
    assert code == 2
    assert out == ""
    assert message in err


# --- helpers ------------------------------------------------------------------------------


def test_meaning_covers_every_claim_and_falls_back_to_the_tier() -> None:
    assert set(AR4SI_MEANINGS) == {
        "instance-identity",
        "configuration",
        "executables",
        "file-system",
        "hardware",
        "runtime-opaque",
        "storage-opaque",
        "sourced-data",
    }
    assert meaning("hardware", 0) == "no claim made"
    assert meaning("executables", 33).startswith("unrecognized runtime")
    assert meaning("executables", 4) == "implementation-specific (affirming range)"
    assert meaning("configuration", 50) == "implementation-specific (warning range)"


def test_decode_token_or_json() -> None:
    payload = base64.urlsafe_b64encode(b'{"a": 1}').rstrip(b"=").decode()
    assert decode_token_or_json(f"eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln".encode(), "t") == {"a": 1}
    assert decode_token_or_json(b' {"b": 2}\n', "t") == {"b": 2}
    with pytest.raises(ConfigError):
        decode_token_or_json(b'"text"', "t")


def test_entry_ref() -> None:
    assert entry_ref("/tmp/a:b.jsonl:12") == (Path("/tmp/a:b.jsonl"), 12)
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected AUDIT\.jsonl:SEQ"):
        entry_ref("audit.jsonl:x")


# --- suggested reference values (trust on first use) ------------------------------------------


def test_suggest_on_sample_evidence_prints_typed_commands_and_writes_the_message(
    cli: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    message = tmp_path / "suggested.json"
    code, out, _ = _sample(cli, files, "--suggest", "--suggest-message", message)
    assert code == EXIT_REFUSED  # the decision is the candidate's with the values given
    assert "TRUST ON FIRST USE: these values are copied from the evidence being judged" in out
    for line in (
        "custodes admin reference-value register launch_digest abcde",
        "custodes admin reference-value register --type number --single major_version 1",
        "custodes admin reference-value register --type number --single minimum_minor_version 4",
        "custodes admin reference-value register svn 1",
        f"custodes admin reference-value register --message {message}",
        "with them the candidate decides: affirming",
    ):
        assert line in out, line
    # The message is what `register --message` sends; with it, the same policy affirms.
    sent = json.loads(message.read_text())
    values = json.loads(base64.b64decode(sent["payload"]))
    assert values == {
        "launch_digest": ["abcde"],
        "major_version": 1,
        "minimum_minor_version": 4,
        "svn": ["1"],
    }
    rv = _write(tmp_path / "rv-from-message.json", values)
    assert _sample(cli, files, "--reference-values", rv)[0] == 0


def test_suggest_json_and_what_no_reference_value_fixes(
    cli: Any, files: dict[str, Path], tmp_path: Path
) -> None:
    debug = dict(json.loads(files["evidence"].read_text()))
    policy = _write(
        tmp_path / "debug.rego",
        default_policy("default_cpu").replace(
            "input.sample.debug == false", "input.sample.debug == true"
        ),
    )
    code, out, _ = cli(
        "policy", "test", "--policy", policy, "--evidence", _write(tmp_path / "e.json", debug),
        "--tee", "sample", "--report-data", REPORT_DATA.hex(), "--suggest", "-o", "json",
    )  # fmt: skip
    assert code == EXIT_REFUSED
    suggested = json.loads(out)["suggested"]
    assert suggested["reference_values"]["svn"] == ["1"]
    assert suggested["decision_with_them"] == "warning"  # configuration stays 36
    assert suggested["message"]["type"] == "sample"
    assert suggested["message_file"] is None
    (still,) = suggested["still_failed"]["cpu0"]["configuration"]
    assert still["condition"] == "input.sample.debug == true"
    assert still["claims"] == {"input.sample.debug": False}


def test_suggest_nothing_when_already_affirming(cli: Any, files: dict[str, Path]) -> None:
    code, out, _ = _sample(cli, files, "--reference-values", files["rv"], "--suggest")
    assert code == 0
    assert "suggested reference values: none" in out


def test_suggest_on_the_tpm_vector_names_the_attestation_key(
    cli: Any, files: dict[str, Path], tpm: dict[str, Any], tmp_path: Path
) -> None:
    rv = _write(tmp_path / "tpm-rv.json", {"tpm_pcr11": ["00" * 32]})
    code, out, _ = cli(
        "policy", "test", "--policy", files["cpu"], "--evidence", tpm["path"], "--tee", "tpm",
        "--report-data", tpm["report_data"], "--reference-values", rv, "--suggest", "-o", "json",
    )  # fmt: skip
    assert code == EXIT_REFUSED
    suggested = json.loads(out)["suggested"]
    assert suggested["reference_values"] == {"trusted_aks": [tpm["ak_public"]]}
    assert suggested["decision_with_them"] == "affirming"


def test_suggest_usage_errors(cli: Any, files: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = _sample(cli, files, "--suggest-message", tmp_path / "m.json")
    assert code == 2 and "--suggest-message: only with --suggest" in err
    code, _, err = cli(
        "policy", "test", "--kind", "resource", "--policy", files["resource"],
        "--claims", files["rv"], "--resource", "default/key/x", "--suggest",
    )  # fmt: skip
    assert code == 2 and "--suggest: only with --kind attestation" in err
    assert not (tmp_path / "m.json").exists()
