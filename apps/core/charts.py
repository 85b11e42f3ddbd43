"""Server-side SVG charts shared by the dashboards: bars, lines and a heat
map. No JavaScript and no chart library: an SVG the admin serves inline,
readable in both colour themes (text and axes in `currentColor`), with a
title, labelled axes and each value as a tooltip. The numbers behind every
chart are also shown as a table and offered as CSV by the page that draws it.

(`apps/segments/charts.py` keeps its own membership line chart; the tick
rule is the same.)
"""

import math
from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 36, 56
X_LABELS = 8
# Series colours: the admin's link colour first, then colour-blind-safe hues.
COLOURS = ("var(--link-fg, #417690)", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def nice_ticks(maximum: float, *, count: int = 6) -> list[float]:
    """At most `count` round ticks from 0 up to at least `maximum`, in steps
    of 1, 2 or 5 times a power of ten (fractions allowed below 1)."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = step * math.ceil(round(maximum / step, 9))
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def short(n: float) -> str:
    if abs(n) >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    if abs(n) >= 10_000:
        return f"{n / 1_000:g}k"
    if n == int(n):
        return f"{int(n):,}"
    return f"{n:g}"


def _empty(title: str) -> SafeString:
    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {w} 60" width="100%" '
        'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
        '<text x="{x}" y="35" text-anchor="middle" fill="currentColor" '
        'font-size="14">{t}: no data yet.</text></svg>',
        w=WIDTH,
        t=title,
        x=WIDTH // 2,
    )


def _frame(title: str, desc: str, x_title: str, y_title: str, body: SafeString) -> SafeString:
    mid = TOP + (HEIGHT - TOP - BOTTOM) // 2
    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="100%" font-size="12" '
        'font-family="inherit" xmlns="http://www.w3.org/2000/svg">'
        "<title>{title}</title><desc>{desc}</desc>"
        '<text x="{cx}" y="18" text-anchor="middle" font-size="14" font-weight="bold" '
        'fill="currentColor">{title}</text>'
        '<text x="{cx}" y="{xt}" text-anchor="middle" fill="currentColor">{x_title}</text>'
        '<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle" '
        'fill="currentColor">{y_title}</text>{body}</svg>',
        w=WIDTH,
        h=HEIGHT,
        title=title,
        desc=desc,
        cx=LEFT + (WIDTH - LEFT - RIGHT) // 2,
        xt=HEIGHT - 8,
        x_title=x_title,
        y_title=y_title,
        mid=mid,
        body=body,
    )


def _y_axis(ticks: list[float], y) -> SafeString:
    return format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="{}"/>'
        '<text x="{}" y="{}" dy="4" text-anchor="end" fill="currentColor">{}</text>',
        (
            (LEFT, WIDTH - RIGHT, y(t), y(t), 0.6 if t == 0 else 0.15, LEFT - 8, y(t), short(t))
            for t in ticks
        ),
    )


def _every(n: int) -> int:
    return max(1, math.ceil(n / X_LABELS))


def bar_chart_svg(
    bars: Sequence[tuple[str, float]], *, title: str, x_title: str, y_title: str
) -> SafeString:
    """Vertical bars, one per (label, value), in the order given."""
    if not bars:
        return _empty(title)
    ticks = nice_ticks(max(v for _, v in bars))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(bars)

    def y(v: float) -> str:
        return f"{TOP + plot_h * (1 - v / ticks[-1]):.1f}"

    every = _every(len(bars))
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>'
        '<text x="{}" y="{}" text-anchor="middle" fill="currentColor">{}</text>',
        (
            (
                f"{LEFT + i * slot + slot * 0.15:.1f}",
                y(v),
                f"{slot * 0.7:.1f}",
                f"{plot_h * v / ticks[-1]:.1f}",
                COLOURS[0],
                label,
                short(v),
                f"{LEFT + i * slot + slot / 2:.1f}",
                HEIGHT - BOTTOM + 16,
                label[:14] if i % every == 0 else "",
            )
            for i, (label, v) in enumerate(bars)
        ),
    )
    desc = "; ".join(f"{label}: {short(v)}" for label, v in bars[:40])
    return _frame(title, desc, x_title, y_title, _y_axis(ticks, y) + rects)


def line_chart_svg(
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    x_title: str,
    y_title: str,
    min_value: float | None = None,
) -> SafeString:
    """One line per series over shared x labels (dates, weeks, months); None
    is a gap. `min_value` lets a score that can be negative (NPS) keep its
    zero line inside the chart."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not labels or not values:
        return _empty(title)
    low = min(0, min(values), min_value if min_value is not None else 0)
    high = max(0, max(values))
    first = nice_ticks(high - low) if high > low else [0, 1]
    step = first[1] - first[0]
    bottom, top = math.floor(low / step), math.ceil(high / step)
    ticks = [round(i * step, 10) for i in range(bottom, max(top, bottom + 1) + 1)]
    lo, hi = ticks[0], ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> str:
        if len(labels) == 1:
            return f"{LEFT + plot_w / 2:.1f}"
        return f"{LEFT + plot_w * i / (len(labels) - 1):.1f}"

    def y(v: float) -> str:
        return f"{TOP + plot_h * (1 - (v - lo) / ((hi - lo) or 1)):.1f}"

    every = _every(len(labels))
    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" fill="currentColor">{}</text>',
        ((x(i), HEIGHT - BOTTOM + 16, label) for i, label in enumerate(labels) if i % every == 0),
    )
    parts = [_y_axis(ticks, y), x_labels]
    for n, (name, vs) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        runs: list[list[str]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i)},{y(v)}")
        parts.append(
            format_html_join(
                "",
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
                ((" ".join(run), colour) for run in runs if run),
            )
        )
        parts.append(
            format_html_join(
                "",
                '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{} {}: {}</title></circle>',
                (
                    (x(i), y(v), colour, name, labels[i], short(v))
                    for i, v in enumerate(vs)
                    if v is not None
                ),
            )
        )
    if len(series) > 1:
        parts.append(
            format_html_join(
                "",
                '<rect x="{}" y="26" width="10" height="10" fill="{}"/>'
                '<text x="{}" y="35" fill="currentColor">{}</text>',
                (
                    (LEFT + 130 * n, COLOURS[n % len(COLOURS)], LEFT + 130 * n + 14, name)
                    for n, name in enumerate(series)
                ),
            )
        )
    desc = f"{', '.join(series)} over {len(labels)} points from {labels[0]} to {labels[-1]}."
    return _frame(title, desc, x_title, y_title, mark_safe("".join(parts)))  # noqa: S308


def heatmap_svg(
    rows: Sequence[str],
    columns: Sequence[str],
    cells: dict[tuple[str, str], float | None],
    *,
    title: str,
    x_title: str,
    y_title: str,
    unit: str = "%",
    maximum: float = 100.0,
) -> SafeString:
    """A grid of rows by columns, each cell shaded by its value (0..maximum)
    and labelled with it; a missing cell (None) is left blank."""
    if not rows or not columns:
        return _empty(title)
    left = 96
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM
    cw, ch = plot_w / len(columns), plot_h / len(rows)
    out = []
    for r, row in enumerate(rows):
        for c, col in enumerate(columns):
            v = cells.get((row, col))
            if v is None:
                continue
            share = max(0.0, min(1.0, v / maximum)) if maximum else 0.0
            out.append(
                (
                    f"{left + c * cw:.1f}",
                    f"{TOP + r * ch:.1f}",
                    f"{cw - 1:.1f}",
                    f"{ch - 1:.1f}",
                    f"{0.08 + 0.85 * share:.2f}",
                    row,
                    col,
                    f"{v:g}{unit}",
                    f"{left + c * cw + cw / 2:.1f}",
                    f"{TOP + r * ch + ch / 2 + 4:.1f}",
                    "#fff" if share > 0.55 else "currentColor",
                    f"{v:.0f}{unit}",
                )
            )
    grid = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690" fill-opacity="{}">'
        "<title>{}, {}: {}</title></rect>"
        '<text x="{}" y="{}" text-anchor="middle" fill="{}">{}</text>',
        out,
    )
    row_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="end" fill="currentColor">{}</text>',
        ((left - 8, f"{TOP + r * ch + ch / 2 + 4:.1f}", row) for r, row in enumerate(rows)),
    )
    col_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle" fill="currentColor">{}</text>',
        (
            (f"{left + c * cw + cw / 2:.1f}", HEIGHT - BOTTOM + 16, col)
            for c, col in enumerate(columns)
        ),
    )
    desc = f"{len(rows)} rows by {len(columns)} columns, values in {unit}."
    return _frame(title, desc, x_title, y_title, grid + row_labels + col_labels)
