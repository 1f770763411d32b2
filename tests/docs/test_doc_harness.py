"""The doc-test harness itself: markers, transcripts, output matching, the parser check and
the walkthrough shell each refuse what they must, so a green docs test means something."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from docblocks import (
    DocTestError,
    marker_problems,
    output_matches,
    parse_console,
    parse_markdown,
    parse_marker,
)
from doccli import check_text, inline_commands
from docrun import run_document
from docshell import Walkthrough, private_network_prefix


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text)
    return path


# -- markers


def test_marker_kinds_and_options() -> None:
    assert parse_marker("run", "x").kind == "run"
    m = parse_marker("run expect-fail timeout=120", "x")
    assert (m.expect_fail, m.timeout) == (True, 120.0)
    i = parse_marker("illustrative (needs a real SNP host)", "x")
    assert (i.kind, i.reason) == ("illustrative", "needs a real SNP host")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "runn",
        "illustrative",  # no reason
        "illustrative expect-fail (why)",
        "run (a reason)",
        "run timeout=soon",
        "run expect-failure",
    ],
)
def test_bad_markers_are_refused(body: str) -> None:
    with pytest.raises(DocTestError):
        parse_marker(body, "doc.md:1")


def test_unmarked_and_unlabelled_blocks_are_reported(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "```sh\nls\n```\n\n"
        "<!-- doc-test: run -->\n```console\n$ true\n```\n\n"
        "```\ncustodes serve\n```\n\n"
        "```\nplain output\n```\n\n"
        "<!-- doc-test: run -->\n```toml\na = 1\n```\n",
    )
    problems = marker_problems(parse_markdown(doc))
    assert len(problems) == 3
    assert ":1: ```sh block has no" in problems[0]
    assert ":10: block without a language holds a command" in problems[1]
    assert "doc-test marker on a ```toml block" in problems[2]


def test_quoted_help_must_be_a_checked_transcript(tmp_path: Path) -> None:
    help_text = "usage: custodes serve [-h] [--config CONFIG]\n"
    doc = _doc(
        tmp_path,
        f"```text\n{help_text}```\n\n"
        "<!-- doc-test: illustrative (why) -->\n"
        f"```console\n$ custodes serve -h\n{help_text}```\n\n"
        f"<!-- doc-test: run -->\n```console\n$ custodes serve -h\n{help_text}```\n",
    )
    problems = marker_problems(parse_markdown(doc))
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in problems] == ["1", "6"]
    assert all("quoted --help output" in p for p in problems)


def test_marker_must_be_on_the_line_before_the_fence(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "<!-- doc-test: run -->\n\n```sh\ntrue\n```\n")
    assert marker_problems(parse_markdown(doc)) == [
        f"{doc}:3: ```sh block has no <!-- doc-test: ... --> marker"
    ]


def test_unclosed_fence_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DocTestError, match="never closed"):
        parse_markdown(_doc(tmp_path, "```sh\ntrue\n"))


# -- transcripts and output matching


def test_console_commands_continuations_and_output(tmp_path: Path) -> None:
    doc = _doc(tmp_path, "x\n```console\n$ echo a \\\n    b\na b\n$ true\n```\n")
    [block] = parse_markdown(doc)
    first, second = parse_console(block)
    assert (first.line, first.text, first.expected) == (3, "echo a \\\n    b", ("a b",))
    assert (second.line, second.text, second.expected) == (6, "true", ())


def test_console_block_must_start_with_a_command(tmp_path: Path) -> None:
    [block] = parse_markdown(_doc(tmp_path, "```console\noutput\n$ true\n```\n"))
    with pytest.raises(DocTestError, match="starts with a '\\$ ' command"):
        parse_console(block)


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        (["a", "b"], "a\nb\n", True),
        (["a", "b"], "a\nb  \n\n", True),  # trailing blanks
        (["a", "b"], "a\nc\n", False),
        (["a"], "a\nb\n", False),  # an extra line
        ([], "", True),
        ([], "noise\n", False),  # a command shown without output must print nothing
        (["id 8ae5…; done"], "id 8ae5f00d; done\n", True),
        (["id ...; done"], "id 1; done\n", True),
        (["id ...; done"], "id 1; gone\n", False),
        (["first", "...", "last"], "first\nx\ny\nlast\n", True),
        (["first", "    …", "last"], "first\nlast\n", True),
        (["first", "...", "last"], "first\nx\n", False),
        (["a.b"], "axb\n", False),  # everything but the wildcard is literal
    ],
)
def test_output_matching(expected: list[str], actual: str, matches: bool) -> None:
    assert output_matches(expected, actual) is matches


# -- the parser check


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("custodes admin resource putt x", "custodes admin resource: no command 'putt'"),
        ("custodes secret keygen --kidd k", "custodes secret keygen: no option --kidd"),
        ("$ custodes initdata build --aa a \\\n    --frob x", "no option --frob"),
        ("X=$(custodes nonesuch)", "custodes: no command 'nonesuch'"),
        ("echo ok && custodes serve --porty 1", "custodes serve: no option --porty"),
        ("custodes k8s secret --repo r -o db.yaml", "-o db.yaml: not one of yaml, json"),
        ("custodes initdata digest --tee=sgx f", "--tee sgx: not one of snp, tdx"),
    ],
)
def test_parser_check_finds_wrong_command_lines(text: str, problem: str) -> None:
    assert problem in " ".join(check_text(text))


def test_commands_in_running_text_are_found() -> None:
    markdown = (
        "Run `custodes serve --bogus` here.\n"
        "```sh\n`custodes in a block` is not prose\n```\n"
        "| `custodes secret unseal (SEALED \\| - \\| --file F)` | `ls -l` |\n"
        "``custodes admin resource `put` x``\n"
    )
    found = inline_commands(markdown)
    assert found == [
        (1, "custodes serve --bogus"),
        (5, "custodes secret unseal (SEALED | - | --file F)"),
        (6, "custodes admin resource `put` x"),
    ]
    assert check_text(found[0][1], synopsis=True) == ["custodes serve: no option --bogus"]
    assert check_text(found[1][1], synopsis=True) == []


def test_parser_check_accepts_real_lines_and_synopses() -> None:
    assert check_text("custodes serve --listen 127.0.0.1:0 # --not-an-option") == []
    assert check_text('custodes initdata digest --tee "$TEE" -o FORMAT f') == []
    assert check_text("custodes dataset inspect FILE|DIR [--bogus]", synopsis=True) == [
        "custodes dataset inspect: no option --bogus"
    ]


# -- the walkthrough shell


@pytest.fixture(scope="module")
def prefix() -> list[str]:
    return private_network_prefix()


@pytest.mark.parametrize("isolated", [True, False], ids=["own-network", "host-network"])
def test_state_is_shared_and_a_failure_ends_the_walkthrough(
    tmp_path: Path, prefix: list[str], isolated: bool
) -> None:
    with Walkthrough(tmp_path, network_prefix=prefix if isolated else []) as shell:
        assert shell.run("X=1; export Y=2; mkdir d; cd d", errexit=True, timeout=10).status == 0
        shown = shell.run('echo "$X $Y $(basename "$PWD")"', errexit=True, timeout=10)
        assert shown.output == "1 2 d\n"
        kept = shell.run("false; echo not reached", errexit=False, timeout=10)
        assert (kept.status, kept.output) == (0, "not reached\n")
        status = shell.run("(exit 3)", errexit=False, timeout=10)
        assert status.status == 3
        assert shell.run("echo $?", errexit=True, timeout=10).output == "3\n"
        ended = shell.run("false\necho not reached", errexit=True, timeout=10)
        assert (ended.status, ended.output, ended.shell_exited) == (1, "", True)


def test_a_hanging_block_times_out_and_background_jobs_end(
    tmp_path: Path, prefix: list[str]
) -> None:
    with Walkthrough(tmp_path, network_prefix=prefix) as shell:
        shell.run("sleep 300 & echo $! > sleeper.pid", errexit=True, timeout=10)
        pid = int((shell.work / "sleeper.pid").read_text())
        with pytest.raises(TimeoutError):
            shell.run("sleep 30", errexit=True, timeout=0.5)
    assert not Path(f"/proc/{pid}").exists()


def test_run_document_reports_the_failing_line(tmp_path: Path, prefix: list[str]) -> None:
    doc = _doc(
        tmp_path,
        "<!-- doc-test: run -->\n```console\n$ echo hi\nhi\n$ echo bye\nhi\n```\n",
    )
    with pytest.raises(DocTestError, match=r"doc\.md:5: `echo bye` printed"):
        run_document(doc, tmp_path / "w", network_prefix=prefix)


def test_expect_fail_needs_a_failure(tmp_path: Path, prefix: list[str]) -> None:
    doc = _doc(tmp_path, "<!-- doc-test: run expect-fail -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocTestError, match="marked expect-fail succeeded"):
        run_document(doc, tmp_path / "w", network_prefix=prefix)
    failing = _doc(tmp_path, "<!-- doc-test: run expect-fail -->\n```sh\nfalse\n```\n")
    assert run_document(failing, tmp_path / "w2", network_prefix=prefix) == 1


def test_walkthroughs_have_their_own_loopback(tmp_path: Path, prefix: list[str]) -> None:
    if not prefix:
        pytest.skip("this system allows no network namespace: walkthroughs share the loopback")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with Walkthrough(tmp_path, network_prefix=prefix) as shell:
            bind = f"import socket; socket.socket().bind(('127.0.0.1', {port})); print('free')"
            shown = shell.run(f'python3 -c "{bind}"', errexit=True, timeout=20)
    assert (shown.status, shown.output) == (0, "free\n")
