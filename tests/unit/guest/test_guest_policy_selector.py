"""The guest's policy selector and GPU mode settings: where a workload admin sets them (the
guest configuration, ``custodes run`` / ``custodes guest api`` flags) and the one-line errors
for bad values. The selector reaching a real broker is tested in
tests/integration/test_policy_selector.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from custodes.cli import main
from custodes.errors import ConfigError, MalformedMessage
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.config import GuestConfig, broker_from_url, load_guest_config, parse_config
from custodes.guest.kbs_client import KbsClient
from custodes.guest.policy_selector import check_policy_selector
from custodes.protocol.messages import POLICY_SELECTOR, Request

FORM = "1 to 64 characters of A-Z a-z 0-9 . _ -"
CANDIDATES: list[object] = [
    "ci",
    "confidential-ai",
    "v1.2_gpu",
    "x" * 64,
    "x" * 65,
    "",
    "a b",
    "../strict",
    "é",
    "ci\n",
    7,
    None,
    ["ci"],
]


def _broker_accepts(name: object) -> bool:
    """Whether the broker reads ``name`` as a selector (``null`` is no selector at all)."""
    body = {"version": "0.4.0", "tee": "sample", "extra-params": {POLICY_SELECTOR: name}}
    try:
        return name is not None and Request.from_json(body).policy_selector() == name
    except MalformedMessage:
        return False


@pytest.mark.parametrize("name", CANDIDATES, ids=repr)
def test_the_guest_accepts_exactly_what_the_broker_parses(name: object) -> None:
    if _broker_accepts(name):
        assert check_policy_selector(name, "where") == name
    else:
        with pytest.raises(ConfigError, match=r"^where: ") as caught:
            check_policy_selector(name, "where")
        assert FORM in str(caught.value) and "\n" not in str(caught.value)


def test_each_broker_table_carries_its_own_selector(tmp_path: Path) -> None:
    raw = {
        "brokers": [
            {"url": "https://bank.example:8080", "policy_selector": "confidential-ai"},
            {"name": "insurer", "url": "https://10.0.0.7:9443"},
        ]
    }
    config = parse_config(raw, tmp_path)
    assert [b.policy_selector for b in config.brokers] == ["confidential-ai", None]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a b", "brokers[0].policy_selector: 'a b' is not a valid policy selector"),
        ("", "brokers[0].policy_selector: '' is not a valid policy selector"),
        (7, "brokers[0].policy_selector: a policy selector is a string"),
    ],
)
def test_a_bad_selector_in_the_configuration_is_one_error(
    tmp_path: Path, value: object, message: str
) -> None:
    raw = {"brokers": [{"url": "https://b.example", "policy_selector": value}]}
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_config(raw, tmp_path)


def test_the_flag_sets_the_one_broker() -> None:
    config = GuestConfig(brokers=(broker_from_url("https://b.example"),))
    chosen = config.with_policy_selector("hardened")
    assert chosen.brokers[0].policy_selector == "hardened"
    assert config.brokers[0].policy_selector is None  # frozen: a new configuration
    with pytest.raises(ConfigError, match=r"^--policy-selector: 'a b' is not a valid"):
        config.with_policy_selector("a b")


def test_the_flag_is_refused_with_several_brokers(tmp_path: Path) -> None:
    raw = {"brokers": [{"url": "https://a.example"}, {"url": "https://b.example"}]}
    with pytest.raises(ConfigError, match="ambiguous with several brokers"):
        parse_config(raw, tmp_path).with_policy_selector("hardened")


def test_the_agent_asks_each_broker_for_its_selector(tmp_path: Path) -> None:
    raw = {
        "brokers": [
            {"url": "https://a.example", "policy_selector": "confidential-ai"},
            {"name": "other", "url": "https://b.example"},
        ]
    }
    config = parse_config(raw, tmp_path)
    agent = AttestationAgent(config, SampleAttester())
    try:
        first, second = (agent.client(b) for b in config.brokers)
        assert (first.policy_selector, second.policy_selector) == ("confidential-ai", None)
    finally:
        agent.close()


def test_the_client_refuses_a_malformed_selector() -> None:
    with pytest.raises(ConfigError, match="is not a valid policy selector"):
        KbsClient("http://127.0.0.1:9", SampleAttester(), policy_selector="a/b")


def test_gpu_mode_in_the_configuration(tmp_path: Path) -> None:
    assert parse_config({}, tmp_path).gpu == "auto"
    assert parse_config({"attester": {"gpu": "off"}}, tmp_path).gpu == "off"
    with pytest.raises(ConfigError, match=r"^attester\.gpu must be one of auto, on, off$"):
        parse_config({"attester": {"gpu": "yes"}}, tmp_path)


def test_a_full_file_with_selector_and_gpu(tmp_path: Path) -> None:
    path = tmp_path / "guest.toml"
    path.write_text(
        '[[brokers]]\nurl = "https://b.example"\npolicy_selector = "gpu-box"\n\n'
        '[attester]\ntee = "sample"\ngpu = "on"\n'
    )
    config = load_guest_config(path)
    assert (config.brokers[0].policy_selector, config.gpu) == ("gpu-box", "on")


@pytest.mark.parametrize("command", ["run", "api"])
def test_cli_bad_selector_is_one_line_before_anything_runs(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["run"] if command == "run" else ["guest", "api"]
    tail = ["--", "true"] if command == "run" else []
    argv = [*base, "--url", "http://127.0.0.1:9", "--tee", "sample"]
    code = main([*argv, "--policy-selector", "no way", *tail])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"custodes: error: --policy-selector: 'no way' is not a valid policy selector ({FORM})"
    )
    assert "Traceback" not in err
