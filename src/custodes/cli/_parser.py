"""The argument parser class every ``custodes`` command is declared with.

Subparsers inherit their parent's class, so declaring the root with :class:`CommandParser`
gives every command two things: an ``examples=[...]`` keyword that becomes the ``Examples:``
block of its ``--help``, and a help formatter that wraps prose but keeps indented lines
(examples, lists) as written. This module imports nothing beyond the standard library: it is
loaded for ``custodes --version``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any, Final

EXAMPLES_HEADING: Final = "Examples:"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps each prose paragraph of a description or epilog to the terminal; a paragraph with
    an indented line (an example, a table) is printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n[ \t]*\n", text.strip("\n"))
        filled = []
        for paragraph in paragraphs:
            lines = paragraph.splitlines()
            if any(line[:1].isspace() for line in lines):
                filled.append("\n".join(indent + line for line in lines))
            else:
                filled.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(filled)


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that takes ``examples`` (command lines, each shown
    indented under ``Examples:``, before any other epilog text)."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        # HelpFormatter keeps RawDescriptionHelpFormatter's promise for every block that has an
        # indented line (examples, command lines, lists) and wraps the prose around them to the
        # terminal, so it stands in for it too.
        if kwargs.get("formatter_class") in (None, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        if examples:
            block = "\n".join([EXAMPLES_HEADING, *(f"  {line}" for line in examples)])
            epilog = kwargs.get("epilog")
            kwargs["epilog"] = f"{block}\n\n{epilog}" if epilog else block
        super().__init__(*args, **kwargs)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of ``parser``'s subcommands, by name (empty for a leaf command)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.setdefault(name, child)
    return found


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command under ``parser`` (itself first), with its path of subcommand names."""
    found = [(path, parser)]
    for name, child in subcommands(parser).items():
        found.extend(walk(child, (*path, name)))
    return found
