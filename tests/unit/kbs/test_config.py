"""``custodes serve`` configuration: defaults, the documented sample, and every refusal."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from custodes.errors import ConfigError
from custodes.kbs.config import CONFIG_VERSION, KbsConfig, ServerConfig, load_config

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "docs" / "serve.sample.toml"


def _sections() -> dict[str, type[Any]]:
    """Section name -> its dataclass, read off KbsConfig itself."""
    defaults = KbsConfig()
    return {
        f.name: type(getattr(defaults, f.name))
        for f in fields(KbsConfig)
        if f.name != "config_version"
    }


def _load(tmp_path: Path, text: str) -> KbsConfig:
    path = tmp_path / "serve.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


# --- defaults and the sample -------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None)
    assert config == KbsConfig()
    assert config.config_version == CONFIG_VERSION
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.sqlite_path == Path("custodes-data") / "custodes.db"
    assert config.admin.public_keys == ()
    assert config.insecure_notices() == []


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == KbsConfig()


def test_sample_names_every_setting() -> None:
    raw = tomllib.loads(SAMPLE.read_text(encoding="utf-8"))
    assert raw.pop("config_version") == CONFIG_VERSION
    sections = _sections()
    assert set(raw) == set(sections)
    for name, cls in sections.items():
        assert set(raw[name]) == {f.name for f in fields(cls)}, f"[{name}] in {SAMPLE.name}"


def test_sample_loads_as_the_defaults() -> None:
    config = load_config(SAMPLE)
    # The only difference: relative paths resolve against the sample's directory.
    base = SAMPLE.resolve().parent
    expected = replace(KbsConfig(), server=replace(ServerConfig(), data_dir=base / "custodes-data"))
    assert config == expected
    assert config.sqlite_path == base / "custodes-data" / "custodes.db"


def test_relative_and_absolute_paths(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        '[server]\ndata_dir = "state"\ntls_cert = "/abs/cert.pem"\ntls_key = "k.pem"\n'
        '[admin]\npublic_keys = ["a.pem", "/abs/b.pem"]\nsubjects = ["alice", "bob"]\n'
        '[storage]\npath = "db/x.db"\n',
    )
    base = tmp_path.resolve()
    assert config.server.data_dir == base / "state"
    assert config.server.tls_cert == Path("/abs/cert.pem")
    assert config.server.tls_key == base / "k.pem"
    assert config.admin.public_keys == (base / "a.pem", Path("/abs/b.pem"))
    assert config.sqlite_path == base / "db" / "x.db"


def test_settings_are_read(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        'config_version = 1\n[server]\nlisten = "[::1]:0"\n'
        "[limits]\nmax_body_bytes = 10\n"
        '[token]\nissuer = "me"\nleeway_seconds = 0\n'
        "[attestation]\nunsafe_allow_sample_tee = true\n",
    )
    assert config.server.host == "::1"
    assert config.server.port == 0
    assert config.limits.max_body_bytes == 10
    assert config.token.issuer == "me"
    assert config.token.leeway_seconds == 0
    assert config.attestation.unsafe_allow_sample_tee
    assert len(config.insecure_notices()) == 1


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[nosuch]\nx = 1\n", "nosuch"),
        ("nosuch = 1\n", "nosuch"),
        ("[server]\nnosuch = 1\n", "server.nosuch"),
        ("[limits]\nmax_body_byte = 1\n", "limits.max_body_byte"),
        ("server = 1\n", "server"),
    ],
    ids=["unknown-section", "unknown-top-level-key", "unknown-key", "typo", "section-not-table"],
)
def test_unknown_names(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        _load(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[limits]\nmax_body_bytes = "1024"\n', "limits.max_body_bytes"),
        ("[limits]\nmax_body_bytes = 1024.0\n", "limits.max_body_bytes"),
        ("[limits]\nmax_body_bytes = true\n", "limits.max_body_bytes"),
        ("[token]\nttl_seconds = false\n", "token.ttl_seconds"),
        ("[attestation]\nunsafe_allow_sample_tee = 1\n", "attestation.unsafe_allow_sample_tee"),
        ('[attestation]\nunsafe_allow_rsa1_5 = "true"\n', "attestation.unsafe_allow_rsa1_5"),
        ("[server]\nlisten = 8080\n", "server.listen"),
        ("[server]\ndata_dir = 1\n", "server.data_dir"),
        ("[token]\nissuer = []\n", "token.issuer"),
        ('[token]\ntrusted_keys = "a.pem"\n', "token.trusted_keys"),
        ("[admin]\npublic_keys = [1]\n", "admin.public_keys"),
        ('config_version = "1"\n', "config_version"),
        ("config_version = true\n", "config_version"),
    ],
    ids=[
        "string-for-int",
        "float-for-int",
        "bool-for-int",
        "bool-for-int-2",
        "int-for-bool",
        "string-for-bool",
        "int-for-string",
        "int-for-path",
        "list-for-string",
        "string-for-path-list",
        "int-in-path-list",
        "string-version",
        "bool-version",
    ],
)
def test_wrong_types(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(names)):
        _load(tmp_path, text)


@pytest.mark.parametrize("name", [f.name for f in fields(_sections()["limits"])])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_limits(tmp_path: Path, name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"limits.{name}")):
        _load(tmp_path, f"[limits]\n{name} = {value}\n")


@pytest.mark.parametrize(
    "text",
    [
        "[token]\nttl_seconds = 0\n",
        "[token]\nleeway_seconds = -1\n",
        "[admin]\nleeway_seconds = -1\n",
        "[admin]\nmax_token_lifetime_seconds = 0\n",
        "[admin]\nmax_token_lifetime_seconds = -60\n",
    ],
)
def test_bad_token_and_admin_limits(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        _load(tmp_path, text)


@pytest.mark.parametrize(
    "listen",
    [
        "localhost",
        "",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1: 80",
        "127.0.0.1:8_0",
        "127.0.0.1:+80",
        "127.0.0.1:８０",  # noqa: RUF001 (fullwidth digits, on purpose)
        "127.0.0.1:123456",
    ],
)
def test_bad_listen(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.listen"):
        _load(tmp_path, f'[server]\nlisten = "{listen}"\n')


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "example.org:65535", "[::]:443"])
def test_good_listen(tmp_path: Path, listen: str) -> None:
    config = _load(tmp_path, f'[server]\nlisten = "{listen}"\n')
    assert config.server.listen == listen


@pytest.mark.parametrize("given", ["tls_cert", "tls_key"])
def test_tls_cert_and_key_together(tmp_path: Path, given: str) -> None:
    with pytest.raises(ConfigError, match=r"tls_cert and server\.tls_key"):
        _load(tmp_path, f'[server]\n{given} = "x.pem"\n')


def test_tls_cert_and_key_both(tmp_path: Path) -> None:
    config = _load(tmp_path, '[server]\ntls_cert = "c.pem"\ntls_key = "k.pem"\n')
    assert config.server.tls_cert is not None
    assert config.server.tls_key is not None


def test_empty_required_path(tmp_path: Path) -> None:
    # "" means "unset" for optional paths; data_dir has no unset state.
    with pytest.raises(ConfigError, match=r"server\.data_dir"):
        _load(tmp_path, '[server]\ndata_dir = ""\n')


def test_unknown_home_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _load(tmp_path, '[storage]\npath = "~no-such-user-custodes/x.db"\n')


@pytest.mark.parametrize("backend", ["mysql", "memory", "", "SQLite"])
def test_unsupported_storage_backend(tmp_path: Path, backend: str) -> None:
    with pytest.raises(ConfigError, match=r"storage\.backend"):
        _load(tmp_path, f'[storage]\nbackend = "{backend}"\n')


@pytest.mark.parametrize("version", [0, 2])
def test_unsupported_config_version(tmp_path: Path, version: int) -> None:
    with pytest.raises(ConfigError, match="config_version"):
        _load(tmp_path, f"config_version = {version}\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory: unreadable as a file even for root (a chmod 000 file is not).
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "[server\n",
        'listen = "a" = "b"\n',
        "[server]\nlisten = '1'\nlisten = '2'\n",
        "[limits]\nmax_body_bytes = 0x\n",
        "a = " + "[" * 5000 + "]" * 5000 + "\n",
    ],
    ids=["unclosed-table", "double-assign", "duplicate-key", "bad-number", "deep-nesting"],
)
def test_invalid_toml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path, text)


def test_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_bytes(b'[token]\nissuer = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
