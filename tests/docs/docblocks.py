"""The code blocks of the Markdown docs, their doc-test markers, and console transcripts.

A shell-like block (```sh, ```bash, ```shell, ```console) must be preceded, on the line
right before its fence, by a marker comment that says what the doc-test does with it::

    <!-- doc-test: run -->                        executed in order with the document's others
    <!-- doc-test: run expect-fail -->            executed; its last command must fail
    <!-- doc-test: run timeout=120 -->            executed, with a longer limit (seconds)
    <!-- doc-test: illustrative (needs a real SNP host) -->   not executed; the reason is required

A fence without a language that holds a command line must say what it is (```sh, ```console
or, for a synopsis, ```text). The convention is documented in docs/contributing.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
DEFAULT_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[^\s`]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<body>.*?)\s*-->\s*$")
_REASON = re.compile(r"\((?P<reason>[^()]+)\)\s*$")
# A line of a language-less fence that a reader would type: such a fence must say its kind.
_COMMAND_LINE = re.compile(
    r"^\s*(?:\$ |(?:\.venv/bin/)?custodes |\.venv/bin/python |kubectl |python3? |sudo )"
)


class DocTestError(Exception):
    """A doc cannot be doc-tested as written: a bad or missing marker, a bad transcript."""


@dataclass(frozen=True)
class Marker:
    kind: str  # "run" or "illustrative"
    reason: str = ""
    expect_fail: bool = False
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def needs_marker(self) -> bool:
        return self.lang in SHELL_LANGUAGES

    @property
    def quotes_help(self) -> bool:
        """Whether the block shows argparse's help of a ``custodes`` command."""
        return any(x.lstrip().startswith("usage: custodes") for x in self.text.splitlines())

    @property
    def unlabelled_command(self) -> bool:
        """A fence without a language that holds something a reader would type."""
        return self.lang == "" and any(_COMMAND_LINE.match(x) for x in self.text.splitlines())


@dataclass(frozen=True)
class Command:
    """One ``$ `` command of a console transcript and the output shown after it."""

    line: int  # 1-based line in the document
    text: str
    expected: tuple[str, ...]


def parse_marker(body: str, where: str) -> Marker:
    reason = ""
    m = _REASON.search(body)
    if m:
        reason = m.group("reason").strip()
        body = body[: m.start()]
    words = body.split()
    if not words or words[0] not in ("run", "illustrative"):
        raise DocTestError(f"{where}: doc-test marker must start with 'run' or 'illustrative'")
    kind, options = words[0], words[1:]
    if kind == "illustrative":
        if options or not reason:
            raise DocTestError(f"{where}: write 'illustrative (why it cannot run here)'")
        return Marker(kind, reason=reason)
    if reason:
        raise DocTestError(f"{where}: a 'run' marker takes no reason")
    expect_fail = False
    timeout = DEFAULT_TIMEOUT
    for option in options:
        if option == "expect-fail":
            expect_fail = True
        elif re.fullmatch(r"timeout=\d{1,4}", option):
            timeout = float(option.partition("=")[2])
        else:
            raise DocTestError(f"{where}: unknown doc-test option {option!r}")
    return Marker(kind, expect_fail=expect_fail, timeout=timeout)


def parse_markdown(path: Path, *, display: Path | None = None) -> list[Block]:
    """Every fenced block of ``path``, with the marker on the line before it (if any)."""
    shown = display or path
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(fence)}\s*$", lines[end]):
            end += 1
        if end == len(lines):
            raise DocTestError(f"{shown}:{i + 1}: code block is never closed")
        marker = None
        if i > 0:
            mm = _MARKER.match(lines[i - 1])
            if mm:
                marker = parse_marker(mm.group("body"), f"{shown}:{i}")
        body = "\n".join(x[indent:] if x[:indent].isspace() else x for x in lines[i + 1 : end])
        blocks.append(Block(shown, i + 1, m.group("lang"), body, marker))
        i = end + 1
    return blocks


def marker_problems(blocks: list[Block]) -> list[str]:
    """What is wrong with the markers of these blocks, one line each (empty if nothing)."""
    problems = []
    for b in blocks:
        if b.needs_marker and b.marker is None:
            problems.append(f"{b.where}: ```{b.lang} block has no <!-- doc-test: ... --> marker")
        elif not b.needs_marker and b.marker is not None:
            problems.append(f"{b.where}: doc-test marker on a ```{b.lang or '(none)'} block")
        elif b.unlabelled_command:
            problems.append(
                f"{b.where}: block without a language holds a command: "
                "say ```sh or ```console (with a marker), or ```text for a synopsis"
            )
        elif b.quotes_help and not (b.lang == "console" and b.marker and b.marker.kind == "run"):
            problems.append(
                f"{b.where}: quoted --help output must be the output of `$ custodes ... --help` "
                "in a run ```console block, so that it is compared with the parser's"
            )
    return problems


def parse_console(block: Block) -> list[Command]:
    """The ``$ `` commands of a console block; ``\\`` continues a command on the next line."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    if lines and not lines[0].startswith("$ "):
        raise DocTestError(f"{block.where}: a console block starts with a '$ ' command")
    while i < len(lines):
        start = i
        text = [lines[i][2:]]
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        commands.append(Command(block.line + 1 + start, "\n".join(text), tuple(expected)))
    return commands


_WILDCARD = re.compile(r"\.\.\.|…")


def _line_pattern(line: str) -> str:
    stripped = line.strip()
    if _WILDCARD.fullmatch(stripped):
        return r"(?:[^\n]*\n)*?"  # a line that is only `...` or `…`: any number of lines
    parts = _WILDCARD.split(line.rstrip())
    return "[^\\n]*".join(re.escape(p) for p in parts) + r"[ \t]*\n"


def output_matches(expected: tuple[str, ...] | list[str], actual: str) -> bool:
    """Whether ``actual`` is what ``expected`` shows: line by line, trailing blanks ignored,
    ``...`` or ``…`` in a line standing for any text, a line of only ``...`` for any lines."""
    want = list(expected)
    while want and not want[-1].strip():
        want.pop()
    got = actual.rstrip("\n\t ")
    got_text = got + "\n" if got else ""
    pattern = "".join(_line_pattern(x) for x in want)
    return re.fullmatch(pattern, got_text) is not None
