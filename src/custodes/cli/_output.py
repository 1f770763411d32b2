"""How commands print data: ``-o/--output table|json|yaml``, one implementation for all.

The convention is kubectl's: ``-o`` chooses the *format* of what a command prints. A command
that writes a file names it with ``--out FILE`` (:func:`add_out`); ``--output FILE``, that
option's former name, is still accepted where the command prints no data, but not shown.

- ``table`` (the default) is for people: aligned columns for a list of records, ``KEY  VALUE``
  lines for one record; a command may give its own rendering instead (an explanation, a
  verdict line).
- ``json`` is for programs: the same data, keys sorted, stable across releases.
- ``yaml``: the same data as YAML (loaded only when asked for).

Times are printed as RFC 3339 UTC (``2026-12-07T07:00:00Z``), never as Unix seconds
(:func:`rfc3339`). This module imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from custodes.types.json import Json

FORMATS: Final = ("table", "json", "yaml")


def add_output_format(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    formats: Sequence[str] = FORMATS,
    default: str = "table",
    legacy_json: bool = False,
) -> None:
    """``-o/--output FORMAT`` (dest ``output_format``); ``legacy_json`` also accepts the
    command's former ``--json`` flag (hidden)."""
    p.add_argument(
        "-o",
        "--output",
        dest="output_format",
        choices=tuple(formats),
        default=default,
        metavar="FORMAT",
        help=f"output format: {', '.join(formats)} (default {default})",
    )
    if legacy_json:
        p.add_argument(
            "--json",
            dest="output_format",
            action="store_const",
            const="json",
            help=argparse.SUPPRESS,
        )


def add_out(p: argparse.ArgumentParser, *, text: str, legacy_output: bool = True) -> None:
    """``--out FILE`` (dest ``output``), with the hidden former spelling ``--output FILE``
    unless the command also takes ``-o/--output FORMAT``."""
    p.add_argument("--out", dest="output", type=Path, metavar="FILE", help=text)
    if legacy_output:
        p.add_argument("--output", dest="output", type=Path, help=argparse.SUPPRESS)
        p.add_argument("-o", action=_OutIsNotO, nargs="?", help=argparse.SUPPRESS)


class _OutIsNotO(argparse.Action):
    """``-o FILE`` on a command that writes a file: a usage error that names the fix (``-o``
    was this option's short name before it became the output format everywhere)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error("-o chooses an output format; write to a file with --out FILE")


def rfc3339(seconds: float) -> str:
    """Unix seconds as an RFC 3339 UTC time, to the second."""
    moment = datetime.fromtimestamp(int(seconds), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Json) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def table(data: Json, *, columns: Sequence[str] | None = None) -> str:
    """The default human rendering: columns for a list of objects (``columns``, else every
    key in order of appearance), one value a line for a list of scalars, ``KEY  VALUE``
    lines for an object, the value itself otherwise."""
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        rows: list[Mapping[str, Json]] = [row for row in data if isinstance(row, dict)]
        names = list(columns or dict.fromkeys(key for row in rows for key in row))
        cells = [[_cell(row.get(name)) for name in names] for row in rows]
        header = [name.upper() for name in names]
        widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(names))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in [header, *cells]
        )
    if isinstance(data, list):
        return "\n".join(_cell(item) for item in data)
    if isinstance(data, dict):
        width = max((len(key) for key in data), default=0)
        return "\n".join(f"{key.ljust(width)}  {_cell(value)}" for key, value in data.items())
    return _cell(data)


def render(data: Json, output_format: str, *, human: Callable[[], str] | None = None) -> str:
    """``data`` in ``output_format``; ``human`` renders ``table`` when the command has its own
    wording. Ends without a newline."""
    if output_format == "json":
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    if output_format == "yaml":
        import yaml

        text: str = yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
        return text.rstrip("\n")
    if output_format != "table":
        # Only the choices of add_output_format reach here; a new one must be rendered above.
        raise ValueError(f"unknown output format {output_format!r}")
    return human() if human is not None else table(data)


def emit(args: argparse.Namespace, data: Json, *, human: Callable[[], str] | None = None) -> None:
    """Print ``data`` in the format the user chose with ``-o``."""
    text = render(data, args.output_format, human=human)
    if text:
        sys.stdout.write(text + "\n")
