"""The server-drawn charts: bars stack to their totals, axes use readable steps, lines have a
dot per value, and the numbers table is the chart's data."""

import pytest

from portal.reports.charts import BYTES, Chart, Series, linear_trend, nice_step


def test_stacked_bars_reach_their_totals():
    chart = Chart(
        id="c",
        title="Jobs",
        kind="bars",
        labels=["d1", "d2"],
        series=[Series("ok", "Completed", [3, 0], "good"), Series("bad", "Failed", [1, 2], "bad")],
    )
    # Axis 0..4 (step 1); the first day's bars stack from the bottom to the top of the plot.
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4"]
    first = [r for r in chart.rects if r.title.startswith("d1")]
    assert [r.title for r in first] == ["d1: Completed 3", "d1: Failed 1"]
    assert first[1].y == pytest.approx(chart.y_ticks[-1].at)
    assert first[0].y + first[0].h == pytest.approx(chart.bottom_y)
    assert len(chart.rects) == 3  # no rectangle for a zero
    assert chart.rows == [("d1", [3, 1]), ("d2", [0, 2])]


def test_byte_axes_step_in_binary_units():
    chart = Chart(
        id="s",
        title="Storage",
        kind="lines",
        unit=BYTES,
        labels=["a", "b", "c"],
        series=[Series("stored", "Stored", [None, 30 << 20, 70 << 20])],
    )
    assert [t.label for t in chart.y_ticks] == [
        "0 bytes",
        "20.0 MiB",
        "40.0 MiB",
        "60.0 MiB",
        "80.0 MiB",
    ]
    (line,) = chart.lines
    assert len(line.dots) == 2  # the day without a value is a gap, not a zero
    assert nice_step(0.2) == 1 and nice_step(3) == 5 and nice_step(3 << 30, BYTES) == 5 << 30


def test_linear_trend():
    assert linear_trend([0, 1, 2], [1, 3, 5]) == pytest.approx((2, 1))
    assert linear_trend([4], [1]) is None
