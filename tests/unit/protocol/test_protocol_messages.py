"""KBS protocol 0.4.0 messages and the strict JSON reader."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from custodes.errors import (
    InvalidTeeKey,
    MalformedMessage,
    UnsupportedTee,
    UnsupportedVersion,
)
from custodes.protocol.binding import HashAlgorithm
from custodes.protocol.messages import (
    ERROR_TYPE_PREFIX,
    PROTOCOL_VERSION,
    Attestation,
    AttestationResult,
    Challenge,
    ErrorInformation,
    InitData,
    Request,
    RuntimeData,
    TeeEvidence,
    parse_json_body,
)
from custodes.protocol.tee_key import TeeKeyAlgorithm
from custodes.types.tee import Tee

# trustee.md §1.3, Request example (the guest lists sm3, which nothing selects).
REQUEST_EXAMPLE = (
    b'{"version": "0.4.0", "tee": "tdx", "extra-params": '
    b'{"supported-hash-algorithms": ["sha256","sha384","sha512","sm3"]}}'
)


@pytest.fixture(scope="module")
def derived(vectors: Path) -> dict[str, Any]:
    path = vectors / "trustee" / "derived" / "kbs_protocol_derived_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture()
def attestation(derived: dict[str, Any]) -> dict[str, Any]:
    """An /attest body in upstream's shape, with the derived example's key and nonce."""
    b = derived["runtime_data_binding"]
    return {
        "init-data": {"format": "toml", "body": 'version = "0.1.0"\nalgorithm = "sha384"\n'},
        "runtime-data": {
            "nonce": b["challenge_nonce"],
            "tee-pubkey": copy.deepcopy(b["primary_runtime_data_json"]["tee-pubkey"]),
        },
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": b["sample_evidence_report_data_b64"]},
            "additional_evidence": "",
        },
    }


# --- strict JSON ---------------------------------------------------------------------------


def test_parse_json_body_accepts_plain_json() -> None:
    assert parse_json_body(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {
        "a": [1, 2.5, "é", None, True]
    }
    assert parse_json_body('"é"'.encode()) == "é"
    assert parse_json_body(b'"\\ud83d\\ude00"') == "\U0001f600"  # a valid surrogate pair


def test_depth_limit_is_inclusive() -> None:
    assert parse_json_body(b"[" * 32 + b"]" * 32) is not None
    with pytest.raises(MalformedMessage):
        parse_json_body(b"[" * 33 + b"]" * 33)
    assert parse_json_body(b"[" * 3 + b"]" * 3, max_depth=3) == [[[]]]
    with pytest.raises(MalformedMessage):
        parse_json_body(b'{"a":{"b":{"c":{}}}}', max_depth=3)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"s": "[" * 100 + '\\"{' * 50}).encode()
    assert parse_json_body(body, max_depth=1) == {"s": "[" * 100 + '\\"{' * 50}


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"[" * 1_000_000,  # unbalanced: still no RecursionError
    ],
    ids=["deep-array", "deep-object", "unbalanced"],
)
def test_deep_nesting_refused_without_recursion(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_json_body(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"[-Infinity]",
        b"[1e400]",
        b'{"a": 1, "a": 2}',
        b'{"x": {"a": 1, "a": 1}}',
        b"\xff\xfe{}",
        b'"\xc3"',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b'"\\ud800"',  # lone surrogate
        b'{"\\udc00": 1}',
        b"{} {}",
        b"",
        b"{'a': 1}",
        b"[" + b"9" * 5000 + b"]",  # beyond Python's int-string limit
    ],
    ids=[
        "nan",
        "infinity",
        "neg-infinity",
        "float-overflow",
        "duplicate-key",
        "nested-duplicate-key",
        "utf16",
        "truncated-utf8",
        "bom",
        "lone-surrogate",
        "lone-surrogate-key",
        "trailing-data",
        "empty",
        "single-quotes",
        "huge-int",
    ],
)
def test_parse_json_body_refusals(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_json_body(body)


def test_parse_json_body_needs_bytes() -> None:
    with pytest.raises(MalformedMessage):
        parse_json_body("{}")  # type: ignore[arg-type]


# --- Request -------------------------------------------------------------------------------


def test_request_example_parses() -> None:
    req = Request.from_json(parse_json_body(REQUEST_EXAMPLE))
    assert req.version == PROTOCOL_VERSION == "0.4.0"
    assert req.tee is Tee.TDX
    assert req.supported_hash_algorithms() == (
        HashAlgorithm.SHA256,
        HashAlgorithm.SHA384,
        HashAlgorithm.SHA512,
    )
    assert req.to_json() == json.loads(REQUEST_EXAMPLE)


@pytest.mark.parametrize("extra", ["", {}, None, {"supported-hash-algorithms": []}])
def test_request_without_hash_list(extra: object) -> None:
    req = Request.from_json({"version": "0.4.0", "tee": "sample", "extra-params": extra})
    assert req.tee is Tee.SAMPLE
    assert req.supported_hash_algorithms() == ()


def test_request_hash_list_deduplicated_and_case_insensitive() -> None:
    extra = {"supported-hash-algorithms": ["SHA512", "sha512", "md5"]}
    req = Request.from_json({"version": "0.4.0", "tee": "se", "extra-params": extra})
    assert req.supported_hash_algorithms() == (HashAlgorithm.SHA512,)


@pytest.mark.parametrize("names", ["sha384", [1], {"sha384": True}])
def test_request_malformed_hash_list(names: object) -> None:
    extra = {"supported-hash-algorithms": names}
    req = Request.from_json({"version": "0.4.0", "tee": "tdx", "extra-params": extra})
    with pytest.raises(MalformedMessage):
        req.supported_hash_algorithms()


def test_stale_kbs_client_auth_vector_refused(vectors: Path) -> None:
    body = (vectors / "trustee" / "tools" / "kbs-client" / "auth.json").read_bytes()
    with pytest.raises(UnsupportedVersion) as info:
        Request.from_json(parse_json_body(body))
    assert "0.1.0" in str(info.value)
    assert "0.4.0" in str(info.value)


def test_stale_cca_request_vector_refused(vectors: Path) -> None:
    path = vectors / "trustee" / "deps" / "verifier" / "test_data" / "cca" / "misc"
    with pytest.raises(UnsupportedVersion):
        Request.from_json(parse_json_body((path / "kbs-request.json").read_bytes()))


@pytest.mark.parametrize("version", ["0.3.0", "0.4.1", "1.0.0", "=0.4.0", " 0.4.0", ""])
def test_other_versions_refused(version: str) -> None:
    with pytest.raises(UnsupportedVersion):
        Request.from_json({"version": version, "tee": "tdx", "extra-params": ""})


@pytest.mark.parametrize("tee", ["sev", "TDX", "nvidia-dpu", ""])
def test_unknown_tee_refused(tee: str) -> None:
    with pytest.raises(UnsupportedTee):
        Request.from_json({"version": "0.4.0", "tee": tee, "extra-params": ""})


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "request",
        {"tee": "tdx", "extra-params": ""},
        {"version": 4, "tee": "tdx", "extra-params": ""},
        {"version": "0.4.0", "extra-params": ""},
        {"version": "0.4.0", "tee": 1, "extra-params": ""},
        {"version": "0.4.0", "tee": "tdx"},
    ],
    ids=["list", "string", "no-version", "int-version", "no-tee", "int-tee", "no-extra-params"],
)
def test_malformed_request_refused(obj: object) -> None:
    with pytest.raises(MalformedMessage):
        Request.from_json(obj)


# --- Challenge -----------------------------------------------------------------------------


def test_challenge_with_empty_string_extra_params() -> None:
    obj = {"nonce": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "extra-params": ""}
    ch = Challenge.from_json(obj)
    assert ch.extra_params == ""
    assert ch.hash_algorithm() is HashAlgorithm.SHA384
    assert ch.to_json() == obj
    assert Challenge(nonce=ch.nonce).to_json() == obj


def test_challenge_with_selected_hash() -> None:
    ch = Challenge.from_json({"nonce": "n", "extra-params": {"selected-hash-algorithm": "sha512"}})
    assert ch.hash_algorithm() is HashAlgorithm.SHA512
    bad = Challenge.from_json({"nonce": "n", "extra-params": {"selected-hash-algorithm": "sm3"}})
    with pytest.raises(MalformedMessage):
        bad.hash_algorithm()


@pytest.mark.parametrize(
    "obj", [{"extra-params": ""}, {"nonce": 1, "extra-params": ""}, {"nonce": "n"}, None]
)
def test_malformed_challenge_refused(obj: object) -> None:
    with pytest.raises(MalformedMessage):
        Challenge.from_json(obj)


# --- Attestation ---------------------------------------------------------------------------


def test_attestation_parses_and_round_trips(
    attestation: dict[str, Any], derived: dict[str, Any]
) -> None:
    att = Attestation.from_json(parse_json_body(json.dumps(attestation).encode()))
    assert att.runtime_data.tee_pubkey.alg is TeeKeyAlgorithm.ECDH_ES_A256KW
    assert att.init_data == InitData(format="toml", body=attestation["init-data"]["body"])
    assert att.tee_evidence.additional_evidence == ""
    assert att.to_json() == attestation
    b = derived["runtime_data_binding"]
    digest = att.runtime_data.digest(att.tee_evidence.additional_evidence, HashAlgorithm.SHA384)
    assert digest.hex() == b["primary_sha384_hex"]
    assert att.runtime_data.device_digest(HashAlgorithm.SHA384).hex() == b["device_sha384_hex"]


def test_attestation_wire_key_spelling(attestation: dict[str, Any]) -> None:
    out = Attestation.from_json(attestation).to_json()
    assert set(out) == {"init-data", "runtime-data", "tee-evidence"}
    assert set(out["runtime-data"]) == {"nonce", "tee-pubkey"}
    assert set(out["tee-evidence"]) == {"primary_evidence", "additional_evidence"}


@pytest.mark.parametrize("init_data", ["absent", None])
def test_attestation_without_init_data(attestation: dict[str, Any], init_data: object) -> None:
    if init_data == "absent":
        del attestation["init-data"]
    else:
        attestation["init-data"] = init_data
    att = Attestation.from_json(attestation)
    assert att.init_data is None
    assert "init-data" not in att.to_json()


def test_stale_kbs_client_attest_vector_refused(vectors: Path) -> None:
    body = (vectors / "trustee" / "tools" / "kbs-client" / "attest.json").read_bytes()
    with pytest.raises(MalformedMessage):
        Attestation.from_json(parse_json_body(body))


@pytest.mark.parametrize("member", ["runtime-data", "tee-evidence"])
def test_attestation_missing_part_refused(attestation: dict[str, Any], member: str) -> None:
    del attestation[member]
    with pytest.raises(MalformedMessage):
        Attestation.from_json(attestation)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("init-data", "format"), "json"),
        (("init-data", "format"), "TOML"),
        (("init-data", "body"), 5),
        (("init-data",), "toml"),
        (("runtime-data",), "data"),
        (("runtime-data", "nonce"), 12),
        (("tee-evidence",), "my_evidence"),
        (("tee-evidence", "additional_evidence"), {"nvidia": {}}),
        (("tee-evidence", "additional_evidence"), None),
    ],
)
def test_attestation_wrong_types_refused(
    attestation: dict[str, Any], path: tuple[str, ...], value: object
) -> None:
    target = attestation
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MalformedMessage):
        Attestation.from_json(attestation)


@pytest.mark.parametrize(
    ("part", "member"),
    [
        ("runtime-data", "nonce"),
        ("runtime-data", "tee-pubkey"),
        ("tee-evidence", "primary_evidence"),
        ("tee-evidence", "additional_evidence"),
        ("init-data", "format"),
        ("init-data", "body"),
    ],
)
def test_attestation_missing_member_refused(
    attestation: dict[str, Any], part: str, member: str
) -> None:
    del attestation[part][member]
    with pytest.raises(MalformedMessage):
        Attestation.from_json(attestation)


def test_kebab_case_evidence_keys_refused(attestation: dict[str, Any]) -> None:
    ev = attestation["tee-evidence"]
    attestation["tee-evidence"] = {
        "primary-evidence": ev["primary_evidence"],
        "additional-evidence": "",
    }
    with pytest.raises(MalformedMessage):
        Attestation.from_json(attestation)


def test_attestation_bad_tee_key_refused(attestation: dict[str, Any]) -> None:
    attestation["runtime-data"]["tee-pubkey"]["kty"] = "oct"
    with pytest.raises(InvalidTeeKey):
        Attestation.from_json(attestation)


def test_attestation_rsa1_5_key_only_when_allowed(derived: dict[str, Any]) -> None:
    jwk = dict(derived["jwe_rsa_oaep_256"]["tee_pubkey_jwk"], alg="RSA1_5")
    rd = {"nonce": "n", "tee-pubkey": jwk}
    body = {"runtime-data": rd, "tee-evidence": {"primary_evidence": {}, "additional_evidence": ""}}
    with pytest.raises(InvalidTeeKey):
        Attestation.from_json(body)
    att = Attestation.from_json(body, allow_rsa1_5=True)
    assert att.runtime_data.tee_pubkey.alg is TeeKeyAlgorithm.RSA1_5
    assert RuntimeData.from_json(rd, allow_rsa1_5=True).tee_pubkey.jwk == jwk


def test_tee_evidence_keeps_primary_evidence_as_is() -> None:
    ev = TeeEvidence.from_json({"primary_evidence": [1, "x"], "additional_evidence": '{"a":1}'})
    assert ev.primary_evidence == [1, "x"]
    assert ev.to_json() == {"primary_evidence": [1, "x"], "additional_evidence": '{"a":1}'}


# --- results and errors --------------------------------------------------------------------


def test_attestation_result() -> None:
    res = AttestationResult.from_json({"token": "a.b.c"})
    assert res.to_json() == {"token": "a.b.c"}
    for bad in ({}, {"token": None}, ["a.b.c"]):
        with pytest.raises(MalformedMessage):
            AttestationResult.from_json(bad)


def test_error_information() -> None:
    info = ErrorInformation.for_variant("PolicyDeny", "Access denied by policy")
    assert info.to_json() == {
        "type": "https://github.com/confidential-containers/kbs/errors/PolicyDeny",
        "detail": "Access denied by policy",
    }
    assert info.type.startswith(ERROR_TYPE_PREFIX)
    assert info.variant == "PolicyDeny"
    assert ErrorInformation.from_json(info.to_json()) == info
    assert ErrorInformation(type="about:blank", detail="").variant is None


@pytest.mark.parametrize("variant", ["", "Policy Deny", "../x", "1Abc"])
def test_error_information_bad_variant(variant: str) -> None:
    with pytest.raises(ValueError):
        ErrorInformation.for_variant(variant, "d")


@pytest.mark.parametrize("obj", [{"type": "t"}, {"detail": "d"}, {"type": 1, "detail": "d"}, []])
def test_error_information_malformed(obj: object) -> None:
    with pytest.raises(MalformedMessage):
        ErrorInformation.from_json(obj)
