"""Docs that run: every shell block of README.md, docs/*.md and examples/*/README.md is
executed against real parts (the real CLI, a real broker the walkthrough starts) or marked
illustrative with a reason, and every ``custodes`` command line in them is accepted by the
real parser.
The marker convention is in docs/contributing.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from docblocks import Block, marker_problems, parse_console, parse_markdown
from doccli import check_text, inline_commands
from docrun import run_document, runnable
from docshell import REPO, private_network_prefix

DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "examples").glob("*/README.md")),
]
# Blocks a reader copies commands from; json/toml/python/yaml blocks hold no command line.
_COMMAND_LANGUAGES = frozenset({"sh", "bash", "shell", "console", "text", ""})


def _blocks(path: Path) -> list[Block]:
    return parse_markdown(path, display=path.relative_to(REPO))


def _commands_of(block: Block) -> str:
    """What a reader types: in a console transcript, the commands, not their output."""
    if block.lang == "console":
        return "\n".join(c.text for c in parse_console(block))
    return block.text


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.fixture(scope="session")
def network_prefix() -> list[str]:
    return private_network_prefix()


def test_every_shell_block_is_marked() -> None:
    problems = [p for doc in DOCS for p in marker_problems(_blocks(doc))]
    assert not problems, "blocks the doc-test cannot classify:\n" + "\n".join(problems)


def test_command_lines_match_the_parser() -> None:
    problems = [
        f"{b.where}: {p}"
        for doc in DOCS
        for b in _blocks(doc)
        if b.lang in _COMMAND_LANGUAGES
        for p in check_text(_commands_of(b), synopsis=b.lang in ("text", ""))
    ]
    assert not problems, "command lines the parser refuses:\n" + "\n".join(problems)


def test_commands_in_running_text_match_the_parser() -> None:
    problems = [
        f"{_name(doc)}:{line}: `{code}`: {p}"
        for doc in DOCS
        for line, code in inline_commands(doc.read_text(encoding="utf-8"))
        for p in check_text(code, synopsis=True)
    ]
    assert not problems, "commands in the text the parser refuses:\n" + "\n".join(problems)


RUNNABLE = [doc for doc in DOCS if runnable(_blocks(doc))]


@pytest.mark.parametrize("doc", RUNNABLE, ids=_name)
def test_doc_runs(doc: Path, tmp_path: Path, network_prefix: list[str]) -> None:
    assert run_document(doc, tmp_path, network_prefix=network_prefix) > 0
