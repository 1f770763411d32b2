"""Run the ``run`` blocks of one document, in order, in one walkthrough shell.

A ```sh block runs as a whole (``set -e -o pipefail``: every command must succeed, or, for
``expect-fail``, the block must end with a failing command). A ```console block runs command
by command; each ``$ `` command must exit 0 (unless the transcript shows its status with a
following ``$ echo $?``, or it is the last command of an ``expect-fail`` block) and print what
the transcript shows (see :func:`docblocks.output_matches`).

By hand, to see one document run (the same as its test)::

    .venv/bin/python tests/docs/docrun.py docs/sealed-secrets.md
    .venv/bin/python tests/docs/docrun.py --show docs/sealed-secrets.md   # print, not compare
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from docblocks import Block, DocTestError, output_matches, parse_console, parse_markdown
from docshell import REPO, Walkthrough, private_network_prefix


def runnable(blocks: list[Block]) -> list[Block]:
    return [b for b in blocks if b.marker is not None and b.marker.kind == "run"]


def _show(text: str) -> str:
    return "\n".join(f"    | {x}" for x in text.rstrip("\n").splitlines()) or "    | (nothing)"


def _run_sh(shell: Walkthrough, block: Block) -> None:
    if block.marker is None:
        raise DocTestError(f"{block.where}: not a run block")
    expect_fail = block.marker.expect_fail
    try:
        outcome = shell.run(block.text, errexit=not expect_fail, timeout=block.marker.timeout)
    except TimeoutError:
        raise DocTestError(
            f"{block.where}: block did not finish within {block.marker.timeout:.0f} s:\n"
            f"{_show(shell.partial_output())}"
        ) from None
    if expect_fail and outcome.status == 0:
        raise DocTestError(f"{block.where}: block marked expect-fail succeeded")
    if not expect_fail and outcome.status != 0:
        raise DocTestError(
            f"{block.where}: block failed with exit status {outcome.status}:\n"
            f"{_show(outcome.output)}"
        )


def _run_console(shell: Walkthrough, block: Block, *, show: bool) -> None:
    if block.marker is None:
        raise DocTestError(f"{block.where}: not a run block")
    commands = parse_console(block)
    for i, command in enumerate(commands):
        following = commands[i + 1].text.strip() if i + 1 < len(commands) else None
        last_expected_to_fail = block.marker.expect_fail and following is None
        may_fail = following == "echo $?" or last_expected_to_fail
        where = f"{block.path}:{command.line}"
        try:
            outcome = shell.run(command.text, errexit=not may_fail, timeout=block.marker.timeout)
        except TimeoutError:
            raise DocTestError(
                f"{where}: `{command.text}` did not finish within {block.marker.timeout:.0f} s:\n"
                f"{_show(shell.partial_output())}"
            ) from None
        if outcome.status != 0 and not may_fail:
            raise DocTestError(
                f"{where}: `{command.text}` failed with exit status {outcome.status}:\n"
                f"{_show(outcome.output)}"
            )
        if last_expected_to_fail and outcome.status == 0:
            raise DocTestError(f"{where}: `{command.text}` succeeded; expect-fail says it fails")
        if show:
            print(f"{where}: $ {command.text}\n{outcome.output}", end="")
        elif not output_matches(command.expected, outcome.output):
            raise DocTestError(
                f"{where}: `{command.text}` printed\n{_show(outcome.output)}\n"
                f"  but the doc shows\n{_show(chr(10).join(command.expected))}"
            )


def run_document(path: Path, root: Path, *, network_prefix: list[str], show: bool = False) -> int:
    """Run every ``run`` block of ``path`` in a walkthrough under ``root``; the number run.
    ``show``: print each console command's output instead of comparing it (to write a doc)."""
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    blocks = runnable(parse_markdown(path, display=shown))
    with Walkthrough(root, network_prefix=network_prefix) as shell:
        for block in blocks:
            if block.lang == "console":
                _run_console(shell, block, show=show)
            else:
                _run_sh(shell, block)
    return len(blocks)


def main(argv: list[str]) -> int:
    show = "--show" in argv
    prefix = private_network_prefix()
    failed = 0
    for name in (a for a in argv if a != "--show"):
        path = (Path.cwd() / name).resolve()
        with tempfile.TemporaryDirectory(prefix="custodes-doc-test-") as tmp:
            try:
                count = run_document(path, Path(tmp), network_prefix=prefix, show=show)
            except DocTestError as e:
                print(f"FAIL {e}", file=sys.stderr)
                failed += 1
            else:
                print(f"ok   {name}: {count} blocks ran")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
