"""The identity settings of ``custodes serve``: each admin, auditor and operator key bound to
one subject, the broker's public URLs, and the ceiling on admin token lifetimes."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.kbs.config import KbsConfig, load_config


def _load(tmp_path: Path, text: str) -> KbsConfig:
    path = tmp_path / "serve.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_single_keys_keep_their_historical_subjects(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[admin]\npublic_keys = ["a.pem"]\nauditor_keys = ["r.pem"]\n'
        '[operator]\npublic_keys = ["o.pem"]\n',
    )
    assert config.admin.admin_subjects(1) == ("admin",)
    assert config.admin.auditor_key_subjects() == ("auditor",)
    assert config.operator.key_subjects() == ("operator",)
    # The generated key (no public_keys) is one key too.
    assert load_config(None).admin.admin_subjects(1) == ("admin",)


def test_configured_subjects(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[server]\npublic_urls = ["https://Broker.example:8443/"]\n'
        '[admin]\npublic_keys = ["a.pem", "b.pem"]\nsubjects = ["alice", "bob"]\n'
        "max_token_lifetime_seconds = 300\n",
    )
    assert config.admin.admin_subjects(2) == ("alice", "bob")
    assert config.server.public_urls == ("https://Broker.example:8443/",)
    assert config.admin.max_token_lifetime_seconds == 300


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Two keys, no subjects: either could sign the other's name.
        ('[admin]\npublic_keys = ["a.pem", "b.pem"]\n', "name the subject each one speaks for"),
        ('[admin]\npublic_keys = ["a.pem", "b.pem"]\nsubjects = ["alice"]\n', "1 entries"),
        ('[admin]\nauditor_keys = ["a.pem", "b.pem"]\n', "admin.auditor_subjects"),
        ('[operator]\npublic_keys = ["a.pem", "b.pem"]\n', "operator.subjects"),
        ('[admin]\nsubjects = ["alice", "bob"]\n', "2 entries for the 1 keys"),
        ('[admin]\nsubjects = ["has space"]\n', "is not 1-128 letters"),
        ('[admin]\nsubjects = [""]\n', "is not 1-128 letters"),
        (
            '[admin]\nsubjects = ["x"]\nauditor_keys = ["r.pem"]\nauditor_subjects = ["x"]\n',
            "differ",
        ),
        ("[admin]\nsubjects = [1]\n", "list of strings"),
        ('[server]\npublic_urls = ["ftp://broker"]\n', "server.public_urls"),
        ('[server]\npublic_urls = ["https://broker/?q=1"]\n', "server.public_urls"),
        ('[server]\npublic_urls = "https://broker"\n', "list of strings"),
        ("[admin]\nmax_token_lifetime_seconds = 86400\n", "between 1 and 3600"),
        ("[admin]\nmax_token_lifetime_seconds = 0\n", "between 1 and 3600"),
    ],
)
def test_refusals(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_default_lifetime_is_short() -> None:
    assert load_config(None).admin.max_token_lifetime_seconds == 900
