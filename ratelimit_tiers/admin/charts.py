"""Stacked bar charts as SVG text, drawn on the server: no JavaScript, nothing fetched, so the admin
works offline.

Pure: no Django (an import-linter contract keeps it so). Every text that goes
into the markup, titles, labels and colors included, is escaped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

#: Drawing area and margins, in SVG user units (the chart scales to its container's width).
PLOT_HEIGHT = 160
LEFT = 56
RIGHT = 24
TOP = 30
BOTTOM = 34
BAR_STEP = 12
TICKS = 4


@dataclass(frozen=True)
class Series:
    """One stacked part of every bar (bottom first), with its legend label."""

    label: str
    color: str


@dataclass(frozen=True)
class Bar:
    """One bar: ``name`` in its tooltip, ``tick`` under it (empty: none), one value per series."""

    name: str
    tick: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class Chart:
    """``ident`` must be unique on the page: it names the title and description for screen readers."""

    ident: str
    title: str
    description: str
    series: tuple[Series, ...]
    bars: tuple[Bar, ...]
    bar_step: int = BAR_STEP  # a bar's width with the gap to the next


def nice_ceiling(value: int) -> int:
    """The y axis top: :data:`TICKS` times the smallest tick of 1, 2, 5, 10, 20, 25, 50, 100... that
    reaches ``value``, so that every tick is a round whole number."""
    magnitude = 1
    while True:
        for factor in (10, 20, 25, 50):
            tick = max(1, magnitude * factor // 10)
            if tick * TICKS >= value:
                return tick * TICKS
        magnitude *= 10


def _text(x: float, y: float, text: str, anchor: str, css: str) -> str:
    return (
        f'<text x="{x:g}" y="{y:g}" text-anchor="{anchor}" class="{css}" font-size="10" '
        f'fill="currentColor">{escape(text)}</text>'
    )


def totals(chart: Chart) -> tuple[int, ...]:
    """Each series' total over all bars."""
    return tuple(sum(bar.values[i] for bar in chart.bars) for i in range(len(chart.series)))


def render(chart: Chart) -> str:
    """The chart as one ``<svg>`` element: stacked bars, y axis with ticks, x ticks, a legend,
    ``<title>`` and ``<desc>`` (the description plus each series' total), a tooltip per bar part."""
    for bar in chart.bars:
        if len(bar.values) != len(chart.series) or min(bar.values, default=0) < 0:
            raise ValueError(f"bar {bar.name!r}: one value >= 0 per series")
    top = nice_ceiling(max((sum(bar.values) for bar in chart.bars), default=0))
    step, gap = chart.bar_step, max(1, chart.bar_step // 6)
    width = LEFT + step * len(chart.bars) + RIGHT
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT
    ident = escape(chart.ident)
    summary = ", ".join(f"{s.label} {n:,}" for s, n in zip(chart.series, totals(chart), strict=True))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rlt-chart" id="{ident}" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'style="max-width: 100%; height: auto" '
        f'aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">{escape(chart.title)}</title>',
        f'<desc id="{ident}-desc">{escape(chart.description)} Totals: {escape(summary)}.</desc>',
    ]
    # The y axis: TICKS + 1 gridlines from 0 to ``top``, each labelled.
    for i in range(TICKS + 1):
        y = base - PLOT_HEIGHT * i / TICKS
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:g}" y2="{y:g}" stroke="#ccc" stroke-width="0.5"/>'
        )
        parts.append(_text(LEFT - 4, y + 3, f"{top * i // TICKS:,}", "end", "rlt-y-tick"))
    for index, bar in enumerate(chart.bars):
        x = LEFT + step * index
        y = float(base)
        for series, value in zip(chart.series, bar.values, strict=True):
            if not value:
                continue
            size = PLOT_HEIGHT * value / top
            y -= size
            parts.append(
                f'<rect class="rlt-bar" data-series="{escape(series.label)}" data-value="{value}" '
                f'x="{x + gap / 2:g}" y="{y:g}" width="{step - gap}" height="{size:g}" '
                f'fill="{escape(series.color)}"><title>{escape(bar.name)}: {escape(series.label)} '
                f"{value:,}</title></rect>"
            )
        if bar.tick:
            middle = x + step / 2
            parts.append(
                f'<line x1="{middle:g}" x2="{middle:g}" y1="{base}" y2="{base + 4}" stroke="currentColor"/>'
            )
            parts.append(_text(middle, base + 16, bar.tick, "middle", "rlt-x-tick"))
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{base}" stroke="currentColor"/>')
    parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{base}" y2="{base}" stroke="currentColor"/>')
    # The legend, above the plot.
    x = LEFT
    for series in chart.series:
        parts.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{escape(series.color)}"/>')
        parts.append(_text(x + 14, 17, series.label, "start", "rlt-legend"))
        x += 24 + 7 * len(series.label)
    parts.append("</svg>")
    return "".join(parts)
