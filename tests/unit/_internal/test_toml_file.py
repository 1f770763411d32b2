"""read_toml: a settings file's document, or one line saying it cannot be read or is not TOML,
in the caller's error class."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes._internal.toml_file import read_toml
from custodes.errors import ConfigError


class _SettingsError(ConfigError):
    code = "test-settings"


def test_reads_the_document(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[rest]\nlisten = "127.0.0.1:8006"\n', encoding="utf-8")
    assert read_toml(path, "settings") == {"rest": {"listen": "127.0.0.1:8006"}}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read settings "),
        (b"[rest\n", "not valid TOML"),
        (b'listen = "\xe9"\n', "not valid TOML"),  # not UTF-8
        (b"a = " + b"[" * 100_000, "not valid TOML"),  # deeper than tomllib can recurse
    ],
)
def test_refusals_in_the_callers_class(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "s.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(_SettingsError, match=needle) as caught:
        read_toml(path, "settings", _SettingsError)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_default_class_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read guest config"):
        read_toml(tmp_path / "absent.toml", "guest config")
