"""Init-data on the broker side, against the upstream TOML vectors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from custodes.attestation.initdata import MAX_INITDATA_BYTES, InitData, InitDataError
from custodes.errors import MalformedEvidence

INTEGRATION = "trustee/integration-tests/tests/init-data-with-policy.toml"
# Digest of the integration vector's bytes (computed here: upstream gives none for it).
INTEGRATION_SHA256 = "0deccded0d87ec44702c7330fac3eb936b68dcca5c9f6b5df1fb3480c0b525ac"


def _text(path: Path) -> str:
    # Exact bytes: read_text() would translate newlines and change the digest.
    return path.read_bytes().decode("utf-8")


def test_guest_components_vectors_digests(vectors: Path) -> None:
    gc = vectors / "guest-components"
    entries = json.loads((gc / "derived-vectors.json").read_text())["initdata"]
    checked = 0
    for entry in entries:
        if not entry.get("file", "").endswith(".toml"):
            continue
        init_data = InitData.parse(_text(gc / entry["file"]))
        assert init_data.algorithm == entry["algorithm"]
        assert init_data.digest.hex() == entry["digest_hex"]
        assert init_data.version == "0.1.0"
        assert len(init_data.raw.encode()) == entry["bytes"]
        checked += 1
    assert checked == 4


def test_integration_vector(vectors: Path) -> None:
    init_data = InitData.parse(_text(vectors / INTEGRATION))
    assert init_data.algorithm == "sha256"
    assert init_data.digest.hex() == INTEGRATION_SHA256
    assert set(init_data.data) == {"policy.rego"}
    claims = init_data.claims()
    assert set(claims) == {"agent_policy_claims"}
    containers = claims["agent_policy_claims"]["containers"]
    # What upstream's integration test checks with its resource policy.
    assert containers[1]["OCI"]["Process"]["Args"][0] == "/opt/bitnami/scripts/nginx/entrypoint.sh"
    assert containers[1]["OCI"]["Annotations"]["io.kubernetes.cri.image-name"] == (
        "bitnami/nginx:latest"
    )
    assert [c["OCI"]["Process"]["User"]["UID"] for c in containers] == [65535, 1001]


def test_website_example_claims(vectors: Path) -> None:
    init_data = InitData.parse(
        _text(vectors / "guest-components/initdata/website-initdata-example.toml")
    )
    claims = init_data.claims()
    assert claims["aa.toml"] == {"token_configs": {"kbs": {"url": "http://1.2.3.4:8080"}}}
    assert claims["cdh.toml"] == {"kbc": {"name": "cc_kbc", "url": "http://1.2.3.4:8080"}}
    # Its agent policy has no policy_data: no agent_policy_claims, and the text is not exposed.
    assert set(claims) == {"aa.toml", "cdh.toml"}


def test_runtime_attestation_example_claims(vectors: Path) -> None:
    path = vectors / "guest-components/initdata/website-runtime-attestation-annotation.decoded.toml"
    claims = InitData.parse(_text(path)).claims()
    assert claims["aa.toml"]["eventlog_config"] == {"init_pcr": 17, "enable_eventlog": True}


def test_empty_data_table(vectors: Path) -> None:
    init_data = InitData.parse(
        _text(vectors / "guest-components/initdata/kata-default-initdata.toml")
    )
    assert dict(init_data.data) == {} and init_data.claims() == {}


def test_digest_is_over_raw_text() -> None:
    a = 'version = "0.1.0"\nalgorithm = "sha512"\n[data]\nk = "v"\n'
    b = a.replace("[data]", "[data]  ")
    da, db = InitData.parse(a), InitData.parse(b)
    assert da.data == db.data
    assert da.digest == hashlib.sha512(a.encode()).digest() != db.digest


def test_other_entries_pass_through_and_dates_become_strings() -> None:
    text = (
        'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"note" = "hello"\n'
        "\"aa.toml\" = '''\nwhen = 2026-01-02T03:04:05Z\n'''\n"
    )
    claims = InitData.parse(text).claims()
    assert claims == {"note": "hello", "aa.toml": {"when": "2026-01-02T03:04:05+00:00"}}


def test_data_is_read_only() -> None:
    init_data = InitData.parse('version = "0.1.0"\nalgorithm = "sha256"\n[data]\nk = "v"\n')
    with pytest.raises(TypeError):
        init_data.data["k"] = "w"  # type: ignore[index]


def _doc(version: str = '"0.1.0"', algorithm: str = '"sha256"', data: str = "[data]\n") -> str:
    return f"version = {version}\nalgorithm = {algorithm}\n{data}"


@pytest.mark.parametrize(
    "text",
    [
        _doc(version='"0.2.0"'),
        _doc(version="1"),
        _doc(algorithm='"sha-256"'),
        _doc(algorithm='"SHA256"'),
        _doc(algorithm='"sha1"'),
        _doc(algorithm='"sm3"'),
        _doc(data=""),
        _doc(data='data = "x"\n'),
        _doc(data="[data]\nk = 1\n"),
        _doc(data="[data]\n[data.k]\nx = 'y'\n"),
        'extra = "x"\n' + _doc(),
        'algorithm = "sha256"\n[data]\n',
        "version = \n",
        "",
        _doc() + "k = " + "[" * 5000 + "]" * 5000 + "\n",  # nesting beyond the parser
    ],
)
def test_malformed_init_data(text: str) -> None:
    with pytest.raises(InitDataError):
        InitData.parse(text)


def test_init_data_error_is_malformed_evidence() -> None:
    assert issubclass(InitDataError, MalformedEvidence)


def test_oversized_init_data() -> None:
    text = _doc(data="[data]\nk = '" + "x" * MAX_INITDATA_BYTES + "'\n")
    with pytest.raises(InitDataError):
        InitData.parse(text)


@pytest.mark.parametrize(
    "data",
    [
        "[data]\n\"aa.toml\" = 'not = = toml'\n",
        "[data]\n\"cdh.toml\" = '[kbc'\n",
        '[data]\n"policy.rego" = \'package p\\npolicy_data := {"a": \'\n',
        '[data]\n"policy.rego" = \'policy_data := {"a": 1}\\nallow := true\'\n',
        '[data]\n"policy.rego" = \'policy_data := {"a": NaN\'\n',
        "[data]\n\"agent_policy_claims\" = '{}'\n",
        '[data]\n"aa.toml" = \'k = ' + "[" * 5000 + "]" * 5000 + "'\n",
        '[data]\n"policy.rego" = \'policy_data := {"a": ' + "[" * 5000 + "]" * 5000 + "}'\n",
    ],
)
def test_bad_embedded_documents(data: str) -> None:
    init_data = InitData.parse(_doc(data=data))  # the envelope is fine
    with pytest.raises(InitDataError):
        init_data.claims()


def test_policy_data_is_the_evaluated_rule_not_a_mention() -> None:
    # A mention before the rule (and one after it: tests/unit/initdata/test_agent_policy.py).
    policy = (
        "package agent_policy\n"
        '# an earlier mention: policy_data := {"not": "this"}\npolicy_data := {"containers": [1]}\n'
    )
    text = _doc(data="[data]\n\"policy.rego\" = '''\n" + policy + "'''\n")
    assert InitData.parse(text).claims() == {"agent_policy_claims": {"containers": [1]}}
