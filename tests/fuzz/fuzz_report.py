"""A pytest plugin that prints, at the end of the session, how many examples each fuzz target ran.

Why a plugin module and not ``tests/fuzz/conftest.py``: mypy checks ``tests/`` without
``__init__.py`` files, so every ``conftest.py`` maps to the one module name ``conftest`` and a
second one is a "Duplicate module named 'conftest'" error. Each fuzz test module instead names
this module in its ``pytest_plugins``, which pytest honours in test modules (only non-root
*conftest* files may not use it): pytest imports it when it first imports a fuzz test module
and calls its ``pytest_terminal_summary`` hook at the end of the session. Test modules must not
import this module themselves (pytest refuses a plugin that is already imported); the counts
live in :mod:`fuzz_support`.
"""

from __future__ import annotations

import pytest
from fuzz_support import EXAMPLES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not EXAMPLES:
        return
    terminalreporter.section("fuzz targets: examples run")
    width = max(map(len, EXAMPLES))
    for target in sorted(EXAMPLES):
        terminalreporter.write_line(f"{target:<{width}}  {EXAMPLES[target]:>7}")
    terminalreporter.write_line(
        f"{'total':<{width}}  {sum(EXAMPLES.values()):>7}  ({len(EXAMPLES)} targets)"
    )
