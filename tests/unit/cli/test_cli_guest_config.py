"""The options `custodes run` and `custodes guest api` share (custodes.cli._guest_config):
declared once and read once, so the two commands start the same guest from the same words."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.cli import build_parser, main
from custodes.cli._guest_config import guest_config, read_init_data_text
from custodes.errors import ConfigError

COMMANDS = [("run",), ("guest", "api")]
OVERRIDES = (
    "--url", "https://broker.example:8443/", "--tee", "sample", "--tcti", "swtpm:port=2321",
    "--gpu", "off", "--policy-selector", "confidential-ai",
)  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_the_command_line_overrides_the_config_file(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    config = tmp_path / "guest.toml"
    config.write_text(
        '[[brokers]]\nname = "default"\nurl = "https://other.example"\n\n'
        '[attester]\ntee = "tpm"\ngpu = "on"\n',
        encoding="utf-8",
    )
    args = build_parser(command[0]).parse_args([*command, "--config", str(config), *OVERRIDES])
    built = guest_config(args)
    assert [b.url for b in built.brokers] == ["https://broker.example:8443"]
    assert built.brokers[0].policy_selector == "confidential-ai"
    assert (built.tee, built.tcti, built.gpu) == ("sample", "swtpm:port=2321", "off")


@pytest.mark.parametrize("command", COMMANDS)
def test_what_is_not_given_comes_from_the_config_file(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    config = tmp_path / "guest.toml"
    config.write_text(
        '[[brokers]]\nname = "default"\nurl = "https://other.example"\n\n[attester]\ntee = "tpm"\n',
        encoding="utf-8",
    )
    args = build_parser(command[0]).parse_args([*command, "--config", str(config)])
    built = guest_config(args)
    assert [b.url for b in built.brokers] == ["https://other.example"]
    assert built.brokers[0].policy_selector is None
    assert (built.tee, built.gpu) == ("tpm", "auto")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_tee_that_is_no_attester_is_a_usage_error(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--tee", "bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --tee: invalid choice: 'bogus'" in err and "'sample'" in err


def test_init_data_is_read_as_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "initdata.toml"
    path.write_bytes('version = "0.1.0"\n# é\n'.encode())
    assert read_init_data_text(path) == 'version = "0.1.0"\n# é\n'
    assert read_init_data_text(None) is None
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=f"cannot read init-data {path}"):
        read_init_data_text(path)
    with pytest.raises(ConfigError, match="cannot read init-data"):
        read_init_data_text(tmp_path / "missing.toml")
