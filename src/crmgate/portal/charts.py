"""Bar charts drawn by the server as SVG (no chart library, no script): the geometry of stacked
bars (answers that succeeded, errors, rate-limit refusals) and their axis, which
templates/_chart.html turns into markup. Colours come from portal.css classes (the CSP allows
no inline style); each chart carries a title and a description for screen readers, and the
page puts its numbers in a table as well."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from crmgate.store.usage_report import Counts

KINDS = (("", "succeeded"), ("errors", "errors"), ("limited", "rate-limited"))


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str  # a CSS class beside "bar": "", "errors", "limited"
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # under or beside the bar ("" for none)
    tooltip: str
    segments: tuple[Segment, ...]
    label_x: float
    label_y: float


@dataclass(frozen=True, slots=True)
class Tick:
    text: str
    x1: float
    y1: float
    x2: float
    y2: float
    text_x: float
    text_y: float


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    description: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    horizontal: bool


def number(value: int) -> str:
    return f"{value:,}"


def scale_top(maximum: int) -> tuple[int, int]:
    """A round top for an axis holding ``maximum`` (1, 2 or 5 times a power of ten per step,
    at most five steps), and its step."""
    if maximum <= 0:
        return 1, 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            candidate = factor * step
            if math.ceil(maximum / candidate) <= 5:
                return candidate * math.ceil(maximum / candidate), candidate
        step *= 10


def _parts(counts: Counts) -> tuple[tuple[str, int], ...]:
    # stacked from the axis: succeeded, other errors, rate-limit refusals (errors too)
    errors = min(counts.errors, counts.requests)
    limited = min(counts.limited, errors)
    return (("", counts.requests - errors), ("errors", errors - limited), ("limited", limited))


def tooltip(counts: Counts, name: str) -> str:
    return (
        f"{name}: {number(counts.requests)} requests, {number(counts.errors)} errors, "
        f"{number(counts.limited)} rate-limited"
    )


def summary(rows: Sequence[Counts]) -> str:
    total = Counts(
        "",
        sum(row.requests for row in rows),
        sum(row.errors for row in rows),
        sum(row.limited for row in rows),
    )
    return (
        f"{number(total.requests)} requests in all, {number(total.errors)} of them errors "
        f"and {number(total.limited)} refused by the rate limits"
    )


def columns(
    id: str, title: str, rows: Sequence[Counts], names: Sequence[str], every: int = 5
) -> Chart:
    """Vertical bars, one per row (a day), left to right; every ``every``-th one labelled."""
    width, height, left, bottom, top = 760, 260, 56, 36, 12
    top_value, step = scale_top(max((row.requests for row in rows), default=0))
    plot = height - bottom - top
    slot = (width - left - 8) / max(len(rows), 1)
    bars = []
    for index, (row, name) in enumerate(zip(rows, names, strict=True)):
        x = left + index * slot + slot * 0.15
        base = float(height - bottom)
        segments = []
        for kind, value in _parts(row):
            if value <= 0:
                continue
            size = plot * value / top_value
            base -= size
            segments.append(
                Segment(kind, round(x, 1), round(base, 1), round(slot * 0.7, 1), round(size, 1))
            )
        label = name if index % every == 0 or index == len(rows) - 1 else ""
        bars.append(
            Bar(
                label,
                tooltip(row, name),
                tuple(segments),
                round(x + slot * 0.35, 1),
                height - bottom + 16,
            )
        )
    ticks = tuple(
        Tick(
            number(value),
            left,
            round(height - bottom - plot * value / top_value, 1),
            width - 8,
            round(height - bottom - plot * value / top_value, 1),
            left - 6,
            round(height - bottom - plot * value / top_value + 4, 1),
        )
        for value in range(0, top_value + 1, step)
    )
    description = f"{title}: {summary(rows)}."
    busiest = max(rows, key=lambda row: row.requests, default=None)
    if busiest is not None and busiest.requests:
        name = names[list(rows).index(busiest)]
        description += f" The busiest was {name}, with {number(busiest.requests)} requests."
    return Chart(id, title, description, width, height, tuple(bars), ticks, horizontal=False)


def rows_chart(id: str, title: str, rows: Sequence[Counts], names: Sequence[str]) -> Chart:
    """Horizontal bars, one per row (an application), top to bottom, each labelled."""
    width, left, right, line, top, bottom = 760, 240, 16, 30, 8, 28
    height = top + bottom + line * max(len(rows), 1)
    top_value, step = scale_top(max((row.requests for row in rows), default=0))
    plot = width - left - right
    bars = []
    for index, (row, name) in enumerate(zip(rows, names, strict=True)):
        y = top + index * line + 5
        start = float(left)
        segments = []
        for kind, value in _parts(row):
            if value <= 0:
                continue
            size = plot * value / top_value
            segments.append(Segment(kind, round(start, 1), y, round(size, 1), line - 10))
            start += size
        short = name if len(name) <= 34 else name[:33] + "…"
        bars.append(Bar(short, tooltip(row, name), tuple(segments), left - 8, y + 15))
    ticks = tuple(
        Tick(
            number(value),
            round(left + plot * value / top_value, 1),
            top,
            round(left + plot * value / top_value, 1),
            height - bottom,
            round(left + plot * value / top_value, 1),
            height - bottom + 16,
        )
        for value in range(0, top_value + 1, step)
    )
    description = f"{title}: {summary(rows)}."
    if rows:
        description += f" The busiest was {names[0]}." if rows[0].requests else ""
    return Chart(id, title, description, width, height, tuple(bars), ticks, horizontal=True)
