import re
from datetime import date, timedelta

from apps.segments.charts import nice_ticks, size_chart_svg

DAY = date(2026, 3, 1)


def test_ticks_are_round_numbers_from_zero_covering_the_maximum():
    assert nice_ticks(0) == [0, 1]
    assert nice_ticks(1) == [0, 1]
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(4293) == [0, 1000, 2000, 3000, 4000, 5000]
    assert nice_ticks(1_000_000) == [0, 200_000, 400_000, 600_000, 800_000, 1_000_000]


def test_the_chart_has_a_point_per_day_with_its_value_and_date():
    series = [(DAY + timedelta(days=i), 100 + 10 * i) for i in range(5)]

    svg = str(size_chart_svg(series))

    points = re.findall(r'data-day="([\d-]+)" data-count="(\d+)"', svg)
    assert points == [(f"{d:%Y-%m-%d}", str(n)) for d, n in series]
    assert "<title>2026-03-05: 140</title>" in svg
    assert svg.count("<circle") == 5


def test_the_axes_are_labelled_with_dates_and_counts():
    series = [(DAY + timedelta(days=i), 1000 + 50 * i) for i in range(90)]

    svg = str(size_chart_svg(series, title="Pro: members per day"))

    x_labels = re.findall(r'<g class="x-axis"[^>]*>(.*?)</g>', svg)[0]
    assert re.findall(r">([A-Z][a-z]{2} \d+)</text>", x_labels)[0] == "Mar 1"
    assert re.findall(r">([A-Z][a-z]{2} \d+)</text>", x_labels)[-1] == "May 29"
    assert len(re.findall(r"<text", x_labels)) == 6
    y_labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    assert y_labels == ["0", "2,000", "4,000", "6,000"]
    assert ">members</text>" in svg
    assert '<title id="size-chart-title">Pro: members per day</title>' in svg
    assert "90 days from 2026-03-01 to 2026-05-29; lowest 1,000, highest 5,450" in svg


def test_bigger_counts_are_abbreviated_on_the_axis_but_exact_on_the_points():
    svg = str(size_chart_svg([(DAY, 0), (DAY + timedelta(days=1), 1_234_567)]))

    assert re.findall(r'text-anchor="end">([^<]+)</text>', svg) == [
        "0",
        "500k",
        "1M",
        "1.5M",
    ]
    assert "<title>2026-03-02: 1,234,567</title>" in svg


def test_higher_counts_are_drawn_higher_and_days_left_to_right():
    svg = str(size_chart_svg([(DAY, 10), (DAY + timedelta(days=2), 30), (DAY + timedelta(1), 20)]))

    circles = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    xs = [float(x) for x, _ in circles]
    ys = [float(y) for _, y in circles]
    assert xs == sorted(xs)  # sorted by day, whatever the input order
    assert ys == sorted(ys, reverse=True)  # SVG y grows downwards
    assert xs[1] - xs[0] == xs[2] - xs[1]


def test_a_missing_day_leaves_a_gap_in_time_not_in_the_points():
    svg = str(size_chart_svg([(DAY, 5), (DAY + timedelta(days=1), 5), (DAY + timedelta(9), 5)]))

    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert round((xs[2] - xs[1]) / (xs[1] - xs[0])) == 8


def test_a_single_day_and_no_days_still_draw():
    one = str(size_chart_svg([(DAY, 42)]))
    none = str(size_chart_svg([]))

    assert 'data-count="42"' in one
    assert "1 day from" in one
    assert "No daily snapshots yet." in none


def test_the_title_is_escaped():
    svg = str(size_chart_svg([(DAY, 1)], title="<script>alert(1)</script>"))

    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
