"""The access matrix as text: a terminal table, Markdown, JSON and a self-contained HTML page.

Every name that reaches the output comes from the (untrusted) cluster dump, so Markdown and
HTML escape everything they print: a Secret called ``<script>`` or ``a|b`` stays text and
cannot break the table. The JSON form is the machine-readable one: every path, with its
chain of "act as" steps, for every cell. No format ever contains a secret value.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from typing import Final, Literal

from custodes.k8s.access.model import AccessPath, Cell, Matrix, WorkloadSecret

Format = Literal["table", "markdown", "json", "html"]
FORMATS: Final[tuple[Format, ...]] = ("table", "markdown", "json", "html")
TITLE: Final = "Access matrix: who can obtain which workload secret in plaintext"
PATHS_SHOWN: Final = 6


def render(matrix: Matrix, fmt: Format) -> str:
    """``matrix`` in format ``fmt``; ends with a newline."""
    renderers: dict[str, Callable[[Matrix], str]] = {
        "table": render_table,
        "markdown": render_markdown,
        "json": render_json,
        "html": render_html,
    }
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r}")
    return renderers[fmt](matrix)


def _secret_line(secret: WorkloadSecret) -> str:
    if secret.sealed:
        where = (
            f"sealed -> {secret.resource or '(unknown resource)'} at {', '.join(secret.brokers)}"
        )
    else:
        where = "plain" + ("" if secret.keys is not None else " (Secret not in the input)")
    holders = ", ".join(secret.holders) or "no pod"
    return f"{secret.id}: {where}; used by {holders}"


def _path_line(path: AccessPath) -> str:
    chain = "".join(f" [{step.short}: {step.detail}]" for step in path.chain)
    if path.blocked:
        return f"{path.label} (blocked: {path.blocked}): {path.detail}{chain}"
    return f"{path.label}: {path.detail}{chain}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


# --- terminal -----------------------------------------------------------------------------


def render_table(matrix: Matrix, *, cell_width: int = 64) -> str:
    """Fixed-width text: the secrets are numbered and the columns named by number."""
    lines = [TITLE, "", "secrets:"]
    for i, secret in enumerate(matrix.secrets, start=1):
        lines.append(f"  [{i}] {_secret_line(secret)}")
    header = ["principal", *(f"[{i}]" for i in range(1, len(matrix.secrets) + 1))]
    rows = [
        [p.display, *(_clip(matrix.cell(p.id, s.id).label, cell_width) for s in matrix.secrets)]
        for p in matrix.principals
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines += ["", line(header), "-+-".join("-" * w for w in widths)]
    lines += [line(r) for r in rows]
    lines += ["", "summary:", *(f"  - {s}" for s in matrix.summary)]
    lines += ["", "assumptions:", *(f"  - {a}" for a in matrix.assumptions)]
    if matrix.warnings:
        lines += ["", "warnings:", *(f"  - {w}" for w in matrix.warnings)]
    lines.append("")
    lines.append("(every path of every cell: -o json, markdown or html)")
    return "\n".join(lines) + "\n"


# --- Markdown -----------------------------------------------------------------------------

_MD_SPECIAL: Final = "\\`*_[]|#"


def md(text: str) -> str:
    """``text`` as literal Markdown inline text, safe inside a table cell."""
    out = []
    for ch in text:
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == "&":
            out.append("&amp;")
        elif ch in "\r\n":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _cell_paths(cell: Cell) -> tuple[list[AccessPath], int]:
    """The paths shown for a cell, and how many more the JSON form has.

    Plaintext paths if any, else what stopped the principal; at most
    :data:`PATHS_SHOWN`, so that a large cluster's report stays readable."""
    paths = list(cell.paths) if cell.status == "plaintext" else list(cell.blocked)
    # One path of each kind first (get/list/watch/update/patch count as one kind), so the
    # few shown are the most varied; the order within each pass is kept.
    seen: set[str] = set()
    first: list[AccessPath] = []
    rest: list[AccessPath] = []
    for path in paths:
        kind = "secrets" if path.via.startswith("secrets/") else path.via
        (rest if kind in seen else first).append(path)
        seen.add(kind)
    ordered = first + rest
    return ordered[:PATHS_SHOWN], max(0, len(ordered) - PATHS_SHOWN)


def render_markdown(matrix: Matrix) -> str:
    out = [f"# {md(TITLE)}", "", "## Summary", ""]
    out += [f"- {md(s)}" for s in matrix.summary]
    out += ["", "## Matrix", ""]
    out.append("| principal | " + " | ".join(md(s.id) for s in matrix.secrets) + " |")
    out.append("|---" * (len(matrix.secrets) + 1) + "|")
    for p in matrix.principals:
        cells = [md(matrix.cell(p.id, s.id).label) for s in matrix.secrets]
        out.append(f"| {md(p.display)} | " + " | ".join(cells) + " |")
    out += ["", "## Secrets", ""]
    out += [f"- {md(_secret_line(s))}" for s in matrix.secrets]
    out += ["", "## Paths", ""]
    for p in matrix.principals:
        entries = []
        for s in matrix.secrets:
            cell = matrix.cell(p.id, s.id)
            if cell.status == "no":
                continue
            entries.append(f"- **{md(s.id)}**: {md(cell.label)}")
            shown, more = _cell_paths(cell)
            entries += [f"  - {md(_path_line(a))}" for a in shown]
            if more:
                entries.append(f"  - {more} more (--format json lists every path)")
        if entries:
            out += [f"### {md(p.display)}", "", *entries, ""]
    out += ["## Assumptions", ""]
    out += [f"- {md(a)}" for a in matrix.assumptions]
    if matrix.warnings:
        out += ["", "## Warnings", ""]
        out += [f"- {md(w)}" for w in matrix.warnings]
    return "\n".join(out) + "\n"


# --- JSON ---------------------------------------------------------------------------------


def render_json(matrix: Matrix) -> str:
    return json.dumps(matrix.to_json(), indent=2, ensure_ascii=False) + "\n"


# --- HTML ---------------------------------------------------------------------------------

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a1a1a; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
th { background: #eee; }
td.plaintext { background: #f8d0d0; }
td.sealed { background: #d0e8f8; }
td.no { background: #e0f0e0; }
details summary { cursor: pointer; }
li { margin: 0.2em 0; }
code { font-size: 0.95em; }
"""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def render_html(matrix: Matrix) -> str:
    """One self-contained page: inline style, no script, no external resource."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(TITLE)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>{_h(TITLE)}</h1>",
        "<h2>Summary</h2><ul>",
        *(f"<li>{_h(s)}</li>" for s in matrix.summary),
        "</ul><h2>Matrix</h2><table><thead><tr><th>principal</th>",
        *(f"<th><code>{_h(s.id)}</code></th>" for s in matrix.secrets),
        "</tr></thead><tbody>",
    ]
    for p in matrix.principals:
        parts.append(f"<tr><th>{_h(p.display)}</th>")
        for s in matrix.secrets:
            cell = matrix.cell(p.id, s.id)
            paths, more = _cell_paths(cell)
            if paths:
                items = "".join(f"<li>{_h(_path_line(a))}</li>" for a in paths)
                if more:
                    items += f"<li>{more} more (the JSON format lists every path)</li>"
                body = f"<details><summary>{_h(cell.label)}</summary><ul>{items}</ul></details>"
            else:
                body = _h(cell.label)
            parts.append(f'<td class="{_h(cell.status)}">{body}</td>')
        parts.append("</tr>")
    parts += ["</tbody></table>", "<h2>Secrets</h2><ul>"]
    parts += [f"<li>{_h(_secret_line(s))}</li>" for s in matrix.secrets]
    parts += ["</ul><h2>Assumptions</h2><ul>"]
    parts += [f"<li>{_h(a)}</li>" for a in matrix.assumptions]
    parts.append("</ul>")
    if matrix.warnings:
        parts += ["<h2>Warnings</h2><ul>", *(f"<li>{_h(w)}</li>" for w in matrix.warnings)]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
