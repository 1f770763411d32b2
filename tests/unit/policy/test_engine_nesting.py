"""Bracket nesting is bounded before regorus parses: its parser's time is exponential in it.

Measured with gordon-to-regorus 0.13: each level of ``[{"a": ...}]`` costs 2-4x, and 24 levels
take about 20 s, so an unbounded policy (or a guest's init-data agent policy) could hold a
worker thread for hours. Every entry point refuses more than MAX_NESTING levels at once.
"""

from __future__ import annotations

import time

import pytest

from custodes.errors import PolicyError
from custodes.policy.engine import (
    MAX_NESTING,
    RegoEngine,
    check_compiles,
    check_nesting,
    inspect_module,
)


def _nested(levels: int, package: str = "policy") -> str:
    opening = '[{"a": ' * (levels // 2) + "[" * (levels % 2)
    closing = "]" * (levels % 2) + "}]" * (levels // 2)
    return f"package {package}\nx := {opening}1{closing}\n"


def test_the_limit_compiles_and_one_more_is_refused_at_once() -> None:
    RegoEngine.check(_nested(MAX_NESTING))
    started = time.monotonic()
    with pytest.raises(PolicyError, match=f"more than {MAX_NESTING} deep \\(line 2\\)"):
        RegoEngine.check(_nested(40))
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "check",
    [
        lambda text: check_compiles(text, package="agent_policy"),
        lambda text: inspect_module(text, rego_v0=False, select=lambda _: []),
        lambda text: RegoEngine.evaluate(text, "data.agent_policy.x", input={}),
    ],
    ids=["check_compiles", "inspect_module", "evaluate"],
)
def test_every_entry_point_is_bounded(check: object) -> None:
    assert callable(check)
    with pytest.raises(PolicyError, match="nests brackets"):
        check(_nested(MAX_NESTING + 1, "agent_policy"))


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    deep = "[" * 50
    check_nesting(f'package p\nx := "{deep}\\"{deep}"\ny := `{deep}`\n# {deep}\n')
    with pytest.raises(PolicyError):
        check_nesting(f"package p\n# {deep}\nx := {deep}")
