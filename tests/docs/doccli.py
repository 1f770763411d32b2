"""Check the ``custodes`` command lines of the docs against the real argument parser.

Every block a reader could copy from (run, illustrative, or a ```text synopsis) is checked:
each ``custodes`` invocation must name existing subcommands, and each ``--option`` in it must
be one that the command (or a parent command) declares. Illustrative blocks cannot run here,
but they must not name a command or an option that does not exist.
"""

from __future__ import annotations

import argparse
import re
import shlex

from custodes.cli import build_parser

# `custodes` at the start of a command: after a prompt, `&&`, `|`, `;`, `$(`, or a path.
_INVOCATION = re.compile(r"(?:^|[\s;&|(`])(?:\.venv/bin/|\S*/)?custodes(?=\s)")
_OPTION = re.compile(r"^(?:--[a-z][a-z0-9-]*|-[a-zA-Z])$")
# Where one command of a line ends.
_END = frozenset({"&&", "||", "|", ";", "&", ")", "`"})


def logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined, ``$ `` prompts and ``#`` comments removed."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw[2:] if raw.startswith("$ ") else raw
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    return [_strip_comment(x) for x in joined]


def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line)


def _tokens(text: str, *, synopsis: bool) -> list[str]:
    """Words of a command line; in a synopsis, ``[ ] ( ) |`` group alternatives."""
    if synopsis:
        text = re.sub(r"[\[\]()]|(?<=\s)\|(?=\s)", " ", text)
        return text.split()
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|)`")
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # an unbalanced quote (the command is inside "$(...)")
        return [w.strip("\"'") for w in re.split(r"\s+|(?=[;&|)`])", text) if w]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _action(parsers: list[argparse.ArgumentParser], option: str) -> argparse.Action | None:
    """The action of ``option`` in the innermost command that declares it."""
    for parser in reversed(parsers):
        for a in parser._actions:
            if option in a.option_strings:
                return a
    return None


def _literal(value: str) -> bool:
    """Whether an option's value in a doc is written out (not a placeholder or a variable)."""
    return not (value.isupper() or re.search(r"[$|{}<>…\[]|\.\.\.", value))


def _choice_problem(action: argparse.Action | None, option: str, value: str) -> str | None:
    if action is None or action.choices is None or not _literal(value):
        return None
    if value in [str(c) for c in action.choices]:
        return None
    allowed = ", ".join(str(c) for c in action.choices)
    return f"{option} {value}: not one of {allowed}"


def check_invocation(words: list[str], root: argparse.ArgumentParser) -> list[str]:
    """Problems with one invocation (``words`` after ``custodes``), one string each."""
    problems: list[str] = []
    parser, path, parsers = root, ["custodes"], [root]
    known = _options(root)
    i = 0
    while i < len(words):
        word = words[i]
        if word in _END or word == "--" or word.endswith("custodes"):
            break  # the end of this command (a diagram may hold two side by side)
        if word.startswith("-"):
            option, equals, value = word.partition("=")
            if _OPTION.match(option) and option not in known:
                problems.append(f"{' '.join(path)}: no option {option}")
            action = _action(parsers, option)
            takes_value = action is not None and action.nargs != 0
            if takes_value and not equals and i + 1 < len(words):
                i += 1
                value = words[i]
            if takes_value and (problem := _choice_problem(action, option, value)):
                problems.append(f"{' '.join(path)}: {problem}")
            i += 1
            continue
        children = _subparsers(parser)
        if children and word in children:
            parser = children[word]
            path.append(word)
            parsers.append(parser)
            known |= _options(parser)
        elif children and word in ("…", "..."):
            break  # the rest of the command is elided
        elif children and re.fullmatch(r"[a-z][a-z0-9-]*", word) and not word.isupper():
            # A positional where a subcommand must come: a misspelt or removed command.
            problems.append(f"{' '.join(path)}: no command {word!r}")
            break
        i += 1
    return problems


def check_text(text: str, *, synopsis: bool = False) -> list[str]:
    """Problems with every ``custodes`` invocation in a block's text (``synopsis``: a usage
    summary, in which brackets, parentheses and `` | `` mark optional and alternative parts)."""
    parser = full_parser()
    problems: list[str] = []
    for line in logical_lines(text):
        for m in _INVOCATION.finditer(line):
            words = _tokens(line[m.end() :], synopsis=synopsis)
            problems.extend(check_invocation(words, parser))
    return problems


_FENCED = re.compile(r"^([ \t]*)(```+|~~~+).*?^\1\2[ \t]*$", re.S | re.M)
# A code span: a run of backticks, then text (not across a paragraph), then as many backticks.
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(?P<code>(?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)", re.S)


def inline_commands(markdown: str) -> list[tuple[int, str]]:
    """The code spans of running text that start with ``custodes``, with their line numbers:
    prose and tables name commands and options too (``\\|`` in a table cell is ``|``)."""
    # Blank out the fenced blocks, keeping their newlines so that line numbers stay right.
    prose = _FENCED.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    found = []
    for m in _CODE_SPAN.finditer(prose):
        code = " ".join(m.group("code").replace("\\|", "|").split())
        if code.startswith("custodes "):
            found.append((prose.count("\n", 0, m.start()) + 1, code))
    return found


_PARSER: list[argparse.ArgumentParser] = []


def full_parser() -> argparse.ArgumentParser:
    """The complete ``custodes`` parser (every command module imported), built once."""
    if not _PARSER:
        _PARSER.append(build_parser())
    return _PARSER[0]
