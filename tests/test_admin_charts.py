"""The SVG bar chart renderer and the peak share: pure functions, no database."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import pytest

from ratelimit_tiers.admin.charts import PLOT_HEIGHT, Bar, Chart, Series, nice_ceiling, render
from ratelimit_tiers.admin.peak_share import hourly_capacity, peak_share
from ratelimit_tiers.rules import ACCOUNT, Rule

SVG = "{http://www.w3.org/2000/svg}"
SERIES = (Series("admitted", "#417690"), Series("refused", "#ba2121"))


def chart(*bars, ident="c1", title="Requests", description="Per hour."):
    return Chart(ident, title, description, SERIES, tuple(bars))


def parse(svg):
    return ET.fromstring(svg)  # Well-formed XML, or this raises.


def bars_of(root):
    return [
        (
            rect.get("data-series"),
            int(rect.get("data-value")),
            float(rect.get("height")),
            float(rect.get("y")),
        )
        for rect in root.iter(f"{SVG}rect")
        if rect.get("class") == "rlt-bar"
    ]


def test_stacked_bars_are_drawn_to_scale_with_a_tooltip_each():
    root = parse(
        render(chart(Bar("10:00", "10h", (30, 10)), Bar("11:00", "", (0, 0)), Bar("12:00", "", (8, 0))))
    )
    # The axis tops at 40 (ticks of 10): 30 of 40 is three quarters of the plot, stacked under the 10.
    drawn = bars_of(root)
    assert [(s, v) for s, v, _, _ in drawn] == [("admitted", 30), ("refused", 10), ("admitted", 8)]
    heights = {v: h for _, v, h, _ in drawn}
    assert heights[30] == pytest.approx(PLOT_HEIGHT * 30 / 40)
    assert heights[10] == pytest.approx(PLOT_HEIGHT * 10 / 40)
    (_, _, _, admitted_y), (_, _, refused_h, refused_y) = drawn[:2]
    assert refused_y + refused_h == pytest.approx(admitted_y)  # Refused sits on top of admitted.
    titles = [r.find(f"{SVG}title").text for r in root.iter(f"{SVG}rect") if r.get("class") == "rlt-bar"]
    assert titles == ["10:00: admitted 30", "10:00: refused 10", "12:00: admitted 8"]


def test_axes_legend_title_and_description_with_totals():
    svg = render(
        chart(Bar("a", "Mon", (1200, 5)), Bar("b", "", (300, 0)), title="Per day", description="Days.")
    )
    root = parse(svg)
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "c1-title c1-desc"
    assert root.find(f"{SVG}title").text == "Per day"
    assert root.find(f"{SVG}desc").text == "Days. Totals: admitted 1,500, refused 5."
    texts = {t.get("class"): [] for t in root.iter(f"{SVG}text")}
    for text in root.iter(f"{SVG}text"):
        texts[text.get("class")].append(text.text)
    assert texts["rlt-legend"] == ["admitted", "refused"]
    assert texts["rlt-x-tick"] == ["Mon"]
    assert texts["rlt-y-tick"] == ["0", "500", "1,000", "1,500", "2,000"]


def test_every_text_is_escaped():
    hostile = '<script>alert("x")</script> & "quotes"'
    svg = Chart(
        hostile,
        hostile,
        hostile,
        (Series(hostile, '"/><script>'), Series("refused", "red")),
        (Bar(hostile, hostile, (1, 1)),),
    )
    rendered = render(svg)
    assert "<script>" not in rendered
    root = parse(rendered)  # Still one well-formed element: nothing broke out of an attribute.
    assert root.find(f"{SVG}title").text == hostile
    assert {t.text for t in root.iter(f"{SVG}text") if t.get("class") == "rlt-x-tick"} == {hostile}
    assert [r.get("fill") for r in root.iter(f"{SVG}rect") if r.get("data-series") == hostile] == [
        '"/><script>'
    ]


def test_an_empty_chart_has_axes_and_no_bar():
    root = parse(render(chart(Bar("a", "", (0, 0)))))
    assert bars_of(root) == []
    assert [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "rlt-y-tick"] == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]


def test_a_bar_needs_one_value_per_series():
    with pytest.raises(ValueError, match="one value >= 0 per series"):
        render(chart(Bar("a", "", (1,))))
    with pytest.raises(ValueError, match="one value >= 0 per series"):
        render(chart(Bar("a", "", (1, -1))))


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 4), (1, 4), (4, 4), (5, 8), (9, 20), (40, 40), (41, 80), (100, 100), (101, 200), (1234, 2000)],
)
def test_the_axis_tops_at_a_round_number(value, top):
    assert nice_ceiling(value) == top


def test_no_script_and_nothing_fetched():
    svg = render(chart(*(Bar(str(i), str(i), (i, i % 3)) for i in range(90))))
    assert not re.search(r"<script|href=|src=|url\(|@import", svg)


class Hour(NamedTuple):
    start: datetime
    prefix: str
    category: str
    admitted: int


T0 = datetime(2026, 12, 1, 10, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)


def test_hourly_capacity():
    assert hourly_capacity(Rule(60, window=60)) == 3600
    assert hourly_capacity(Rule(100, window=3600)) == 100
    assert hourly_capacity(Rule(10, window=1)) == 36000
    assert hourly_capacity(Rule(1000, window=86400)) == 1000  # Longer than an hour: all in one hour.
    assert hourly_capacity(Rule(5000, calendar="day")) == 5000


def test_peak_share_is_the_busiest_hour_against_the_tightest_rule():
    rules = [Rule(60, window=60), Rule(1000, calendar="day")]
    rows = [Hour(T0, "a", "read", 300), Hour(T1, "a", "read", 600), Hour(T1, "a", "write", 100)]
    # 600 in an hour: 600 / 3600 of the per-minute rule, 600 / 1000 of the daily quota.
    assert peak_share(rows, rules) == pytest.approx(0.6)


def test_peak_share_per_key_takes_the_busiest_key_per_account_all_keys():
    rows = [Hour(T0, "a", "read", 30), Hour(T0, "b", "read", 50)]
    assert peak_share(rows, [Rule(100, window=3600)]) == pytest.approx(0.5)
    assert peak_share(rows, [Rule(100, window=3600, scope=ACCOUNT)]) == pytest.approx(0.8)


def test_peak_share_counts_each_category_apart_under_the_rules_it_meets():
    rules = [Rule(100, window=3600), Rule(10, window=3600, category="write")]
    rows = [Hour(T0, "a", "read", 50), Hour(T0, "a", "write", 40), Hour(T1, "a", "read", 20)]
    # write has its own hourly rule (10): 40 of 10; read meets the all-categories rule: 50 of 100.
    assert peak_share(rows, rules) == pytest.approx(4.0)
    assert peak_share(rows[:1] + rows[2:], rules) == pytest.approx(0.5)


def test_no_rule_no_row_no_share():
    assert peak_share([], [Rule(60, window=60)]) is None
    assert peak_share([Hour(T0, "a", "read", 5)], []) is None
    assert peak_share([Hour(T0, "a", "read", 5)], [Rule(10, window=60, category="write")]) is None
