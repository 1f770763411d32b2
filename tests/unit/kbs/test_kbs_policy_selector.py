"""The policy selector's parts: the ``Request`` member, the broker setting, the mapping, and
the session that carries the decision from ``/auth`` to ``/attest``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import ConfigError, MalformedMessage, UnsupportedVersion
from custodes.kbs.config import load_config
from custodes.kbs.policy_selector import (
    DEFAULT_POLICY_ID,
    UnknownPolicySelector,
    select_policy,
)
from custodes.kbs.session import Session, SessionManager
from custodes.protocol.messages import Request, version_label
from custodes.storage.memory import MemoryStore


def _request(extra: Any = "", **members: Any) -> Request:
    return Request.from_json({"version": "0.4.0", "tee": "snp", "extra-params": extra, **members})


# --- Request ---------------------------------------------------------------------------------


def test_request_selector_absent_or_null_is_none() -> None:
    assert _request().policy_selector() is None
    assert _request({"supported-hash-algorithms": ["sha384"]}).policy_selector() is None
    assert _request({"policy-selector": None}).policy_selector() is None


def test_request_selector_is_read() -> None:
    assert _request({"policy-selector": "team-a.v2_x"}).policy_selector() == "team-a.v2_x"


@pytest.mark.parametrize("bad", ["", " a", "a/b", "é", "x" * 65, 1, True, {}, ["a"]])
def test_request_malformed_selector_is_refused_at_parse(bad: object) -> None:
    with pytest.raises(MalformedMessage, match="policy-selector must be 1 to 64"):
        _request({"policy-selector": bad})


def test_request_unknown_members_are_kept_by_name_only() -> None:
    req = _request("", topology={"gpus": 8}, **{"tee-metadata": [1], "zz\n": 0})
    assert req.ignored_members == ("tee-metadata", "topology", "'zz\\n'")
    assert set(req.to_json()) == {"version", "tee", "extra-params"}


def test_request_recorded_members_are_bounded() -> None:
    req = _request("", **{f"m{i:02d}": i for i in range(40)}, **{"y" * 500: 0})
    assert len(req.ignored_members) == 16
    assert all(len(name) <= 66 for name in req.ignored_members)


@pytest.mark.parametrize("version", ["0.3.0", "0.4.1", "0.4", "1.0.0", " 0.4.0"])
def test_request_version_is_exactly_0_4_0(version: str) -> None:
    with pytest.raises(UnsupportedVersion, match=r"expected 0\.4\.0"):
        Request.from_json({"version": version, "tee": "snp", "extra-params": ""})


def test_refused_version_is_quoted_short() -> None:
    with pytest.raises(UnsupportedVersion) as info:
        Request.from_json({"version": "9" * 1000, "tee": "snp", "extra-params": ""})
    assert len(str(info.value)) < 100


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ({"version": "0.4.0"}, "0.4.0"),
        ({"version": "0.1.1"}, "0.1.1"),
        ({"version": "0.5.0"}, "other"),
        ({"version": 4}, "missing"),
        ({}, "missing"),
        ([], "missing"),
    ],
)
def test_version_label_is_a_small_set(body: object, label: str) -> None:
    assert version_label(body) == label


# --- mapping ---------------------------------------------------------------------------------


def test_select_policy() -> None:
    mapping = {"ai": "strict"}
    assert select_policy(None, mapping).policy_id == DEFAULT_POLICY_ID == "default"
    chosen = select_policy("ai", mapping)
    assert (chosen.selector, chosen.policy_id) == ("ai", "strict")
    with pytest.raises(UnknownPolicySelector, match="'strict' is not configured"):
        select_policy("strict", mapping)  # a policy id is not a selector
    with pytest.raises(UnknownPolicySelector):
        select_policy("ai", {})


# --- configuration ---------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "serve.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_config_policy_id_map(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[attestation]\npolicy_id_map = { zeta = "z", "confidential-ai" = "strict.v2" }\n',
    )
    assert config.attestation.policy_id_map == (("confidential-ai", "strict.v2"), ("zeta", "z"))
    assert config.attestation.policy_ids() == {"confidential-ai": "strict.v2", "zeta": "z"}
    assert _load(tmp_path, "").attestation.policy_ids() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('policy_id_map = ["a"]', "must be a table of strings"),
        ("policy_id_map = { a = 1 }", "must be a table of strings"),
        ('policy_id_map = { "a b" = "x" }', "selector 'a b' must be"),
        ('policy_id_map = { a = "" }', "policy id '' must be"),
        ('policy_id_map = { a = "x/y" }', "policy id 'x/y' must be"),
        (f'policy_id_map = {{ a = "{"p" * 54}" }}', "1 to 53 characters"),
    ],
)
def test_config_policy_id_map_refusals(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, f"[attestation]\n{text}\n")


# --- session ---------------------------------------------------------------------------------


def test_session_carries_the_selection() -> None:
    manager = SessionManager(MemoryStore(), FrozenClock(1000.0), 60)
    created = manager.create(
        "snp", "sha384", policy_id="strict", policy_selector="ai", protocol_version="0.4.0"
    )
    again = manager.get(created.id)
    assert (again.policy_id, again.policy_selector, again.protocol_version) == (
        "strict",
        "ai",
        "0.4.0",
    )


def test_session_stored_before_the_selector_existed_decodes_as_default() -> None:
    old = {
        "id": "s",
        "state": "authed",
        "tee": "snp",
        "nonce": "n",
        "hash_algorithm": "sha384",
        "expires_at": 1.0,
        "token": None,
    }
    session = Session.decode(json.dumps(old).encode())
    assert (session.policy_id, session.policy_selector) == ("default", None)


def test_request_selector_under_the_current_and_the_earlier_name() -> None:
    # trustee #1606 renamed the member; clients of either generation are understood.
    current = _request({"attestation-policy-selector": "team-a"})
    assert current.policy_selector() == "team-a"
    assert _request({"policy-selector": "team-a"}).policy_selector() == "team-a"
    both = _request({"attestation-policy-selector": "team-a", "policy-selector": "team-a"})
    assert both.policy_selector() == "team-a"


def test_request_naming_two_policies_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="name different policies"):
        _request({"attestation-policy-selector": "team-a", "policy-selector": "team-b"})


def test_request_malformed_current_selector_is_refused() -> None:
    with pytest.raises(MalformedMessage, match="attestation-policy-selector must be 1 to 64"):
        _request({"attestation-policy-selector": "a/b"})
