"""Charts drawn on the server as SVG: stacked bars per day and lines over days.

Why SVG from the server rather than a JavaScript library: a chart is a handful of rectangles
and lines over numbers the view already has; drawn here it needs no script, no vendored bundle
to keep current, renders the same in every browser (and with scripts off), and is testable as
markup. Each chart carries its numbers as a table (`rows`), which the template shows beside
it for screen readers and tests; the SVG itself is `role="img"` with the title as its name.
"""

import math
from dataclasses import dataclass, field

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
    def empty(self) -> bool:
        return not any(v for s in self.series for v in s.values)

    def _top(self) -> float:
        if self.kind == "bars":
            tops = [sum(s.values[i] or 0 for s in self.series) for i in range(len(self.labels))]
        else:
            tops = [v or 0 for s in self.series for v in s.values]
        return nice_ceiling(max(tops, default=0))

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
            points = [
                f"{LEFT + slot * (i + 0.5):.2f},{y(v):.2f}"
                for i, v in enumerate(s.values)
                if v is not None
            ]
            if points:
                self.lines.append(Line(" ".join(points), s.tone, s.dashed, s.label))


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k (or binary steps for bytes) at or above `value`;
    1 for nothing, so an empty chart still has an axis."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value:
            return float(m * exp)
    return float(10 * exp)  # pragma: no cover - the loop ends at 10 × exp


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
