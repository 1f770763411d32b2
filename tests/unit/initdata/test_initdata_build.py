"""The deterministic writer: exact layout, byte-for-byte stability, exact round trip of any
text, and the checks the broker will apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.initdata.build import build, build_document, read_entry, render
from custodes.initdata.errors import InitDataError, InitDataTooLarge
from custodes.initdata.format import MAX_INITDATA_BYTES, InitData

AA = '[token_configs]\n[token_configs.kbs]\nurl = "https://broker:8080"\n'
CDH = '[kbc]\nname = "cc_kbc"\nurl = "https://broker:8080"\n'
POLICY = "package agent_policy\n\ndefault ExecProcessRequest := false\n"


def test_exact_layout() -> None:
    init_data = build(aa=AA, cdh=CDH, policy=POLICY, algorithm="sha384")
    assert init_data.raw == (
        'version = "0.1.0"\nalgorithm = "sha384"\n\n[data]\n'
        f"\"aa.toml\" = '''\n{AA}'''\n\n"
        f"\"cdh.toml\" = '''\n{CDH}'''\n\n"
        f"\"policy.rego\" = '''\n{POLICY}'''\n"
    )
    assert dict(init_data.data) == {"aa.toml": AA, "cdh.toml": CDH, "policy.rego": POLICY}


def test_empty_document_equals_the_kata_default(vectors: Path) -> None:
    path = vectors / "guest-components/initdata/kata-default-initdata.toml"
    assert build().raw_bytes == path.read_bytes()


def test_same_inputs_same_bytes() -> None:
    a = build(aa=AA, cdh=CDH, extra={"z": "1", "a": "2"})
    b = build(extra={"a": "2", "z": "1"}, cdh=CDH, aa=AA)
    assert a.raw_bytes == b.raw_bytes and a.digest == b.digest
    assert render({"z": "1", "cdh.toml": CDH, "aa.toml": AA, "a": "2"}) == a.raw_bytes
    # Known entries first in a fixed order, then the others by name.
    assert a.raw.index('"aa.toml"') < a.raw.index('"cdh.toml"') < a.raw.index('"a"')
    assert a.raw.index('"a"') < a.raw.index('"z"')


def test_algorithm_changes_only_the_header() -> None:
    a, b = build(aa=AA, algorithm="sha256"), build(aa=AA, algorithm="sha512")
    assert a.raw.replace("sha256", "sha512") == b.raw and len(b.digest) == 64


def test_default_algorithm_is_sha256() -> None:
    assert build(aa=AA).algorithm == "sha256"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "\nstarts with a newline\n",
        "no trailing newline",
        "ends with a quote'",
        "ends with two quotes''",
        "has ''' inside",
        'back\\slash and "quotes"',
        "windows\r\nlines\r\n",
        "tab\there",
        "bell\x07 and del\x7f and nul\x00",
        "unicode: ü ß 漢字 🙂",
        '"""basic delimiters"""',
    ],
)
def test_any_text_round_trips_exactly(text: str) -> None:
    init_data = build_document({"note": text, "other key with spaces": text})
    assert init_data.data["note"] == text
    assert InitData.from_bytes(init_data.raw_bytes) == init_data


def test_invalid_aa_toml() -> None:
    with pytest.raises(InitDataError):
        build(aa="url = ")


def test_invalid_cdh_toml() -> None:
    with pytest.raises(InitDataError):
        build(cdh="[kbc")


def test_invalid_policy_data() -> None:
    with pytest.raises(InitDataError):
        build(policy='package p\npolicy_data := {"a": \n')


@pytest.mark.parametrize("algorithm", ["sha-256", "SHA256", "sha1", ""])
def test_bad_algorithm(algorithm: str) -> None:
    with pytest.raises(InitDataError):
        build(aa=AA, algorithm=algorithm)


def test_non_string_values() -> None:
    with pytest.raises(InitDataError):
        build_document({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InitDataError):
        render({1: "v"})  # type: ignore[dict-item]


def test_reserved_entry_names() -> None:
    with pytest.raises(InitDataError):
        build(extra={"aa.toml": AA})
    with pytest.raises(InitDataError):
        build(extra={"agent_policy_claims": "{}"})


def test_surrogate_text() -> None:
    with pytest.raises(InitDataError):
        build(extra={"k": "\ud800"})


def test_too_large() -> None:
    with pytest.raises(InitDataTooLarge):
        build(extra={"k": "x" * MAX_INITDATA_BYTES})


def test_read_entry_keeps_bytes(tmp_path: Path) -> None:
    path = tmp_path / "aa.toml"
    path.write_bytes(b"a = 1\r\nb = 2\r\n")
    assert read_entry(path) == "a = 1\r\nb = 2\r\n"


def test_read_entry_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        read_entry(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError):
        read_entry(bad)
