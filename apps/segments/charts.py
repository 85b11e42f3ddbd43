"""Server-side SVG charts for the admin: no JavaScript, no chart library, and
readable in both of the admin's colour themes (text and axes use
`currentColor`, the line the admin's own link colour)."""

import math
from collections.abc import Sequence
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 720, 260
# Room for the y labels on the left and the date labels underneath.
LEFT, RIGHT, TOP, BOTTOM = 64, 32, 16, 40
X_LABELS = 6


def nice_ticks(maximum: int, *, count: int = 6) -> list[int]:
    """At most `count` round y-axis ticks from 0 up to at least `maximum`, in
    steps of 1, 2 or 5 times a power of ten."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / (count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    step = max(1, int(step))
    top = step * math.ceil(maximum / step)
    return list(range(0, top + 1, step))


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    if n >= 10_000:
        return f"{n / 1_000:g}k"
    return f"{n:,}"


def _label_days(days: list[date]) -> list[date]:
    """At most X_LABELS dates, evenly spread, always the first and the last."""
    if len(days) <= X_LABELS:
        return days
    step = (len(days) - 1) / (X_LABELS - 1)
    return [days[round(i * step)] for i in range(X_LABELS)]


def _grid(ticks: list[int], y) -> SafeString:
    """A horizontal rule and a label per y tick; the zero line is the x axis."""
    return format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="{}"/>'
        '<text x="{}" y="{}" dy="4" text-anchor="end">{}</text>',
        (
            (LEFT, WIDTH - RIGHT, y(t), y(t), 0.6 if t == 0 else 0.15, LEFT - 8, y(t), _short(t))
            for t in ticks
        ),
    )


def size_chart_svg(
    series: Sequence[tuple[date, int]], *, title: str = "Members per day"
) -> SafeString:
    """A line chart of a daily count: dates along the bottom, counts up the
    side, a dot per day with its exact value as a tooltip."""
    points = sorted(series)
    if not points:
        return format_html(
            '<svg class="size-chart" role="img" viewBox="0 0 {w} 60" width="100%" '
            'xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
            '<text x="{x}" y="35" text-anchor="middle" fill="currentColor" '
            'font-size="14">No daily snapshots yet.</text></svg>',
            w=WIDTH,
            t=title,
            x=WIDTH // 2,
        )

    first, last = points[0][0], points[-1][0]
    span = max((last - first).days, 1)
    ticks = nice_ticks(max(count for _, count in points))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    # Coordinates as strings: format_html escapes (stringifies) its arguments.
    def x(day: date) -> str:
        if first == last:
            return f"{LEFT + plot_w / 2:.1f}"
        return f"{LEFT + plot_w * (day - first).days / span:.1f}"

    def y(count: int) -> str:
        return f"{TOP + plot_h * (1 - count / ticks[-1]):.1f}"

    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (x(day), HEIGHT - BOTTOM + 18, f"{day:%b} {day.day}")
            for day in _label_days([day for day, _ in points])
        ),
    )
    counts = [count for _, count in points]
    desc = (
        f"{len(points)} day{'s' if len(points) > 1 else ''} from {first} to {last}; "
        f"lowest {min(counts):,}, highest {max(counts):,}, latest {counts[-1]:,}."
    )
    line = " ".join(f"{x(day)},{y(count)}" for day, count in points)
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="{}" data-day="{}" data-count="{}">'
        "<title>{}: {}</title></circle>",
        (
            (
                x(day),
                y(count),
                3 if len(points) <= 120 else 1.5,
                day.isoformat(),
                count,
                day.isoformat(),
                f"{count:,}",
            )
            for day, count in points
        ),
    )
    return format_html(
        '<svg class="size-chart" role="img" aria-labelledby="size-chart-title size-chart-desc" '
        'viewBox="0 0 {w} {h}" width="100%" font-size="12" font-family="inherit" '
        'xmlns="http://www.w3.org/2000/svg">'
        '<title id="size-chart-title">{title}</title>'
        '<desc id="size-chart-desc">{desc}</desc>'
        '<g class="y-axis" fill="currentColor">{grid}</g>'
        '<g class="x-axis" fill="currentColor">{x_labels}</g>'
        '<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle" '
        'fill="currentColor">members</text>'
        '<polyline points="{line}" fill="none" stroke="var(--link-fg, #417690)" '
        'stroke-width="2" stroke-linejoin="round"/>'
        '<g class="points" fill="var(--link-fg, #417690)">{dots}</g>'
        "</svg>",
        w=WIDTH,
        h=HEIGHT,
        title=title,
        desc=desc,
        grid=_grid(ticks, y),
        x_labels=x_labels,
        mid=TOP + plot_h // 2,
        line=line,
        dots=dots,
    )
