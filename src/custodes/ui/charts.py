"""Charts drawn on the server as SVG: no JavaScript, no chart library, nothing to load.

Every text that reaches the SVG is escaped; colours come from classes in ``ui.css`` (the
Content-Security-Policy allows no inline style), and each chart has a ``<title>`` and a
``<desc>`` plus, in the page, the same numbers as a table for screen readers.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from markupsafe import Markup

from custodes.ui.digest import MINUTE_MS

SERIES: Final = (
    ("attestations", "handshakes"),
    ("releases", "releases"),
    ("denials", "denials"),
)


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    label: str
    bucket_minutes: int
    buckets: int


WINDOWS: Final = {
    "1h": Window("1h", "last hour", 1, 60),
    "24h": Window("24h", "last 24 hours", 30, 48),
    "30d": Window("30d", "last 30 days", 24 * 60, 30),
}


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ms: int
    attestations: int
    releases: int
    denials: int
    refused: int

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def buckets(minutes: Mapping[int, Sequence[int]], window: Window, now_ms: int) -> list[Bucket]:
    """The window's buckets ending with the one holding ``now_ms`` (one lookup per minute)."""
    size = window.bucket_minutes
    last = (now_ms // MINUTE_MS) // size * size
    first = last - (window.buckets - 1) * size
    out: list[Bucket] = []
    for start in range(first, last + 1, size):
        sums = [0, 0, 0, 0]
        for minute in range(start, start + size):
            counts = minutes.get(minute)
            if counts is not None:
                for i in range(4):
                    sums[i] += counts[i]
        out.append(Bucket(start * MINUTE_MS, sums[0], sums[1], sums[2], sums[3]))
    return out


def activity_svg(data: Sequence[Bucket], window: Window) -> Markup:
    """Grouped bars per bucket: handshakes, releases, denials."""
    width, height, left, bottom, top = 720, 220, 40, 28, 10
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max((max(b.attestations, b.releases, b.denials) for b in data), default=0) or 1
    slot = plot_w / max(len(data), 1)
    bar = max(slot / 4, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'role="img" aria-labelledby="chart-title chart-desc" class="chart">',
        '<title id="chart-title">Handshakes, releases and denials, '
        f"{html.escape(window.label)}</title>",
        f'<desc id="chart-desc">{len(data)} bars of {window.bucket_minutes} minutes; '
        f"highest count {peak}; the table below lists every value.</desc>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 10}" '
        f'y2="{top + plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, b in enumerate(data):
        x0 = left + i * slot + (slot - 3 * bar) / 2
        for j, (name, _) in enumerate(SERIES):
            value = getattr(b, name)
            if not value:
                continue
            h = plot_h * value / peak
            parts.append(
                f'<rect class="bar {name}" x="{x0 + j * bar:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}"><title>{html.escape(b.label)}: '
                f"{value} {name}</title></rect>"
            )
    for i in (0, len(data) // 2, len(data) - 1) if data else ():
        x = left + i * slot + slot / 2
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{height - 8}" text-anchor="middle">'
            f"{html.escape(data[i].label[5:])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


@dataclass(frozen=True, slots=True)
class MatrixPicture:
    """An access matrix reduced to what the picture shows."""

    title: str
    principals: tuple[str, ...]
    secrets: tuple[str, ...]
    # (principal index, secret index) -> "plaintext" | "sealed" | "no"
    cells: Mapping[tuple[int, int], str]
    labels: Mapping[tuple[int, int], str]


def matrix_svg(m: MatrixPicture) -> Markup:
    """Rows are principals, columns workload secrets; red: plaintext, green: sealed (TEE
    only), grey: no access. Each cell's tooltip is its label (``plaintext via …``)."""
    # Room above and to the right for the column names, rotated 50 degrees.
    cell, left, top = 26, 230, 190
    width = left + cell * len(m.secrets) + 150
    height = top + cell * len(m.principals) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" class="matrix" aria-label="{html.escape(m.title)}">',
        f"<title>{html.escape(m.title)}</title>",
    ]
    for j, name in enumerate(m.secrets):
        x = left + j * cell + cell / 2
        parts.append(
            f'<text class="col" transform="translate({x:.1f},{top - 6}) rotate(-50)">'
            f"{html.escape(name[:40])}</text>"
        )
    for i, name in enumerate(m.principals):
        y = top + i * cell
        parts.append(
            f'<text class="row" x="{left - 6}" y="{y + cell * 0.65:.1f}" text-anchor="end">'
            f"{html.escape(name[:36])}</text>"
        )
        for j in range(len(m.secrets)):
            status = m.cells.get((i, j), "no")
            label = m.labels.get((i, j), status)
            parts.append(
                f'<rect class="cell {html.escape(status)}" x="{left + j * cell}" y="{y}" '
                f'width="{cell - 2}" height="{cell - 2}"><title>{html.escape(name)} / '
                f"{html.escape(m.secrets[j])}: {html.escape(label)}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
