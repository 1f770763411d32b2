"""The command table: every command registers, its help runs, and the placeholder help of a
command not being run matches its real help."""

from __future__ import annotations

import argparse

import pytest

from custodes.cli import COMMANDS, build_parser, main


def _help_of(parser: argparse.ArgumentParser, name: str) -> str | None:
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help
    return None


def test_full_parser_has_every_command() -> None:
    parser = build_parser()
    for name, (_, help_text) in COMMANDS.items():
        assert _help_of(parser, name) == help_text, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_each_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: custodes {name}")


def test_only_the_named_command_is_built() -> None:
    parser = build_parser("run")
    assert _help_of(parser, "serve") == COMMANDS["serve"][1]
    args = parser.parse_args(["run", "--", "true"])
    assert args.func.__module__ == "custodes.cli.run"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["frobnicate"])
    assert done.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
