from apps.core.charts import bar_chart_svg, heatmap_svg, line_chart_svg, nice_ticks


def test_ticks_are_round_and_reach_the_maximum():
    assert nice_ticks(307) == [0, 100, 200, 300, 400]
    assert nice_ticks(0.6) == [0, 0.2, 0.4, 0.6]


def test_a_bar_chart_has_a_title_axis_titles_and_a_bar_per_value_escaped():
    svg = bar_chart_svg(
        [("<script>", 3), ("b", 5)], title="Sent & more", x_title="node", y_title="count"
    )
    assert svg.count("<rect") == 2
    assert "Sent &amp; more" in svg and "<script>" not in svg
    assert ">node</text>" in svg and ">count</text>" in svg


def test_a_line_chart_with_negative_values_keeps_them_inside():
    svg = line_chart_svg(["w1", "w2"], {"NPS": [-40, 20]}, title="NPS", x_title="w", y_title="n")
    assert ">-40</text>" in svg or ">-50</text>" in svg
    assert "NPS w1: -40" in svg


def test_an_empty_chart_says_so():
    assert "no data yet" in bar_chart_svg([], title="T", x_title="x", y_title="y")


def test_a_heat_map_labels_each_cell_and_leaves_missing_ones_blank():
    svg = heatmap_svg(
        ["2026-01", "2026-02"],
        ["+0", "+1"],
        {("2026-01", "+0"): 100.0, ("2026-01", "+1"): 50.0, ("2026-02", "+0"): 100.0},
        title="Cohorts",
        x_title="months",
        y_title="cohort",
    )
    assert svg.count("<rect") == 3
    assert "2026-01, +1: 50%" in svg
