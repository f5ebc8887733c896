"""Charts drawn on the server as SVG: stacked bars per day and lines over days.

Why SVG from the server rather than a JavaScript library: a chart is a handful of rectangles
and lines over numbers the view already has; drawn here it needs no script, no vendored bundle
to keep current, renders the same in every browser (and with scripts off), and is testable as
markup. Each chart carries its numbers as a table (`rows`), which the template shows beside
it for screen readers and tests; the SVG itself is `role="img"` with the title as its name.
"""

import math
from dataclasses import dataclass, field

from portal.reports.table import raw
from portal.units import iec

WIDTH = 640
HEIGHT = 220
LEFT = 72  # room for the y-axis labels
RIGHT = 12
TOP = 12
BOTTOM = 30  # room for the x-axis labels
MAX_X_LABELS = 8

COUNT = "count"
BYTES = "bytes"


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    values: list[float | None]
    tone: str = "neutral"  # a CSS tone: good, warn, bad, busy, neutral, muted
    dashed: bool = False
    # Bars only: a tone per label instead of the series' one.
    tones: list[str] | None = None


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    tone: str
    title: str


@dataclass(frozen=True)
class Line:
    points: str
    tone: str
    dashed: bool
    label: str
    # Each value as a dot too, so a single recorded day is visible: (x, y, title).
    dots: tuple[tuple[float, float, str], ...] = ()


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass
class Chart:
    """`kind` "bars" stacks the series per label; "lines" draws each series as a line."""

    id: str
    title: str
    kind: str
    labels: list[str]
    series: list[Series]
    unit: str = COUNT
    note: str = ""
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)

    width = WIDTH
    height = HEIGHT
    left = LEFT
    bottom_y = HEIGHT - BOTTOM
    right_x = WIDTH - RIGHT

    def __post_init__(self) -> None:
        assert self.kind in ("bars", "lines"), self.kind
        for s in self.series:
            assert len(s.values) == len(self.labels), s.key
        self._draw()

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "—"
        if self.unit == BYTES:
            return iec(value)
        return f"{value:g}"

    @property
    def rows(self) -> list[tuple[str, list[float | None]]]:
        """The chart's numbers: one row per label, one value per series."""
        return [(label, [s.values[i] for s in self.series]) for i, label in enumerate(self.labels)]

    @property
    def cells(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """`rows` ready for the numbers table: (label, [(raw value, text)]), formatted here
        once rather than by a template filter per cell."""
        return [
            (label, [("" if v is None else raw(v), self.fmt(v)) for v in values])
            for label, values in self.rows
        ]

    @property
    def empty(self) -> bool:
        return not any(v for s in self.series for v in s.values)

    def _top(self) -> float:
        if self.kind == "bars":
            tops = [sum(s.values[i] or 0 for s in self.series) for i in range(len(self.labels))]
        else:
            tops = [v or 0 for s in self.series for v in s.values]
        return 4 * nice_step(max(tops, default=0) / 4, self.unit)

    def _draw(self) -> None:
        n = len(self.labels)
        if not n:
            return
        top = self._top()
        plot_h = self.bottom_y - TOP
        plot_w = self.right_x - LEFT
        slot = plot_w / n

        def y(value: float) -> float:
            return round(self.bottom_y - (value / top) * plot_h, 2)

        self.y_ticks = [Tick(y(top * k / 4), self.fmt(top * k / 4)) for k in range(5)]
        step = max(1, math.ceil(n / MAX_X_LABELS))
        self.x_ticks = [
            Tick(round(LEFT + slot * (i + 0.5), 2), self.labels[i]) for i in range(0, n, step)
        ]
        if self.kind == "bars":
            width = max(1.0, slot * 0.7)
            for i, label in enumerate(self.labels):
                base = 0.0
                for s in self.series:
                    v = s.values[i] or 0
                    if v <= 0:
                        continue
                    self.rects.append(
                        Rect(
                            round(LEFT + slot * i + (slot - width) / 2, 2),
                            y(base + v),
                            round(width, 2),
                            round(y(base) - y(base + v), 2),
                            s.tones[i] if s.tones else s.tone,
                            f"{label}: {s.label} {self.fmt(v)}",
                        )
                    )
                    base += v
            return
        for s in self.series:
            at = [
                (
                    round(LEFT + slot * (i + 0.5), 2),
                    y(v),
                    f"{self.labels[i]}: {s.label} {self.fmt(v)}",
                )
                for i, v in enumerate(s.values)
                if v is not None
            ]
            if at:
                points = " ".join(f"{x},{yy}" for x, yy, _ in at)
                dots = () if s.dashed else tuple(at)
                self.lines.append(Line(points, s.tone, s.dashed, s.label, dots))


def nice_step(value: float, unit: str = COUNT) -> float:
    """The smallest readable axis step at or above `value`: 1, 2 or 5 × 10^k for counts
    (whole numbers, at least 1); 1, 2 or 5 × 10^k of a binary unit (KiB, MiB, …) for bytes,
    so the ticks read "20 MiB", "40 MiB"."""
    if unit == BYTES:
        base = 1.0
        while value > base * 1000 and base < 1024.0**6:
            base *= 1024
        scaled = value / base
    else:
        base, scaled = 1.0, max(value, 1.0)
    if scaled <= 0:
        return base
    exp = 10 ** math.floor(math.log10(scaled))
    for m in (1, 2, 5, 10):
        if m * exp >= scaled:
            return float(m * exp * base)
    return float(10 * exp * base)  # pragma: no cover - the loop ends at 10 × exp


def linear_trend(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of y over x; None with fewer than two distinct xs."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    return slope, my - slope * mx
