"""Inline SVG charts for report.html: no library, no network, every label escaped.

Each chart is a string of SVG. Points carry a ``data-tip`` (shown by the report's small hover
script) and a ``<title>`` (the browser's own tooltip, so hover works without script too).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 48


@dataclass
class Series:
    """Points of one colour; ``line`` joins them in order, ``tips`` label each point."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    tips: Sequence[str] = ()
    color: str = PALETTE[0]
    line: bool = False
    radius: float = 4.0
    marker_attrs: str = ""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values inside [low, high] (never outside the axis); whole numbers only
    when ``integer`` (trial numbers)."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    if integer:
        step = max(1, math.ceil(step) if step < 2 else round(step))
    start = math.ceil(low / step - 1e-9) * step
    ticks = [start + i * step for i in range(int((high - start) / step + 1e-9) + 1)]
    return [round(t, 10) for t in ticks if low - 1e-9 <= t <= high + 1e-9]


def _fmt_tick(value: float, log: bool) -> str:
    if log:
        return f"1e{value:.0f}" if abs(value - round(value)) < 1e-9 else ""
    return f"{value:g}"


def chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    y_range: tuple[float, float] | None = None,
    chart_id: str = "",
    x_integer: bool = False,
) -> str:
    """A scatter/line chart of ``series``; ``x_log`` plots log10(x) with powers of 10 as ticks,
    ``x_integer`` ticks whole numbers only. Lines join a series' points in order of x."""
    points = [(x, y) for s in series for x, y in zip(s.xs, s.ys, strict=True)
              if _finite(x, x_log) and math.isfinite(y)]  # fmt: skip
    head = (
        f'<figure class="chart" id="{_esc(chart_id)}"><figcaption>{_esc(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{_esc(title)}">'
    )
    if not points:
        return (
            head
            + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text></svg></figure>'
        )
    axes = _Axes.around(points, x_log, y_range)
    parts = [head, *axes.grid(x_label, y_label, x_integer)]
    parts += [_series_svg(s, axes) for s in series]
    parts += [_legend(series), "</svg></figure>"]
    return "".join(parts)


@dataclass
class _Axes:
    """The plotted ranges (x in log10 units with ``x_log``) and the data-to-pixel maps."""

    x0: float
    x1: float
    y0: float
    y1: float
    x_log: bool

    @classmethod
    def around(cls, points, x_log: bool, y_range) -> _Axes:
        xs = [math.log10(x) if x_log else x for x, _ in points]
        ys = [y for _, y in points]
        x0, x1 = min(xs), max(xs)
        if x_log:
            x0, x1 = math.floor(x0), math.ceil(x1)
        if x1 <= x0:
            x0, x1 = x0 - 1, x1 + 1
        y0, y1 = y_range if y_range else (min(ys), max(ys))
        if y1 <= y0:
            y0, y1 = y0 - 1, y1 + 1
        pad = 0.0 if y_range else (y1 - y0) * 0.05
        return cls(x0, x1, y0 - pad, y1 + pad, x_log)

    def gx(self, t: float) -> float:
        """Pixel of a tick at ``t`` in axis units (log10 with ``x_log``)."""
        return LEFT + (t - self.x0) / (self.x1 - self.x0) * (WIDTH - LEFT - RIGHT)

    def px(self, x: float) -> float:
        return self.gx(math.log10(x) if self.x_log else x)

    def py(self, y: float) -> float:
        return HEIGHT - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (HEIGHT - TOP - BOTTOM)

    def grid(self, x_label: str, y_label: str, x_integer: bool) -> list[str]:
        """The plot area, grid lines, tick labels and axis titles."""
        parts = [f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
                 f'height="{HEIGHT - TOP - BOTTOM}" fill="#fafafa" stroke="#ccc"/>']  # fmt: skip
        x_ticks = (range(int(self.x0), int(self.x1) + 1) if self.x_log
                   else _ticks(self.x0, self.x1, integer=x_integer))  # fmt: skip
        for t in x_ticks:
            gx = self.gx(t)
            parts.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#e6e6e6"/>'
                         f'<text x="{gx:.1f}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle" font-size="11">{_fmt_tick(t, self.x_log)}</text>')  # fmt: skip
        for t in _ticks(self.y0, self.y1):
            gy = self.py(t)
            parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#e6e6e6"/>'
                         f'<text x="{LEFT - 5}" y="{gy + 4:.1f}" text-anchor="end" font-size="11">{t:g}</text>')  # fmt: skip
        parts.append(
            f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle" font-size="12">{_esc(x_label)}</text>'
            f'<text transform="translate(14 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" font-size="12">{_esc(y_label)}</text>'
        )
        return parts


def _series_svg(s: Series, axes: _Axes) -> str:
    """A series' line (in order of x) and its points, each with its hover tip."""
    pts = [(x, y, tip) for x, y, tip in zip(s.xs, s.ys, list(s.tips) or [""] * len(s.xs), strict=True)
           if _finite(x, axes.x_log) and math.isfinite(y)]  # fmt: skip
    parts = []
    if s.line and len(pts) > 1:
        path = " ".join(
            f"{axes.px(x):.1f},{axes.py(y):.1f}" for x, y, _ in sorted(pts, key=lambda p: p[0])
        )
        parts.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"/>')
    if s.radius > 0:
        for x, y, tip in pts:
            label = _esc(tip or f"{s.name}: ({x:g}, {y:.4g})")
            parts.append(f'<circle cx="{axes.px(x):.1f}" cy="{axes.py(y):.1f}" r="{s.radius}" fill="{s.color}" '
                         f'{s.marker_attrs} data-tip="{label}"><title>{label}</title></circle>')  # fmt: skip
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    """One entry per name (a band's points and its trend line share one), when there are two."""
    named: list[Series] = []
    for s in series:
        if all(s.name != other.name for other in named):
            named.append(s)
    if len(named) < 2:
        return ""
    parts = []
    for i, s in enumerate(named):
        lx, ly = LEFT + 8 + (i % 3) * 160, 12 + (i // 3) * 13
        parts.append(f'<circle cx="{lx}" cy="{ly - 4}" r="4" fill="{s.color}" {s.marker_attrs}/>'
                     f'<text x="{lx + 8}" y="{ly}" font-size="11">{_esc(s.name)}</text>')  # fmt: skip
    return "".join(parts)


def _finite(x: float, log: bool) -> bool:
    return x is not None and math.isfinite(x) and (x > 0 or not log)


def heatmap(
    title: str,
    cells: dict[tuple[int, int], tuple[float, str]],
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    *,
    x_label: str,
    y_label: str,
    value_range: tuple[float, float],
    chart_id: str = "",
) -> str:
    """Coloured cells ``(column, row) -> (value, tip)``; empty cells stay blank."""
    cols, rows = len(x_labels), len(y_labels)
    left = LEFT + 30  # row labels are ranges ("283-612"): wider than numbers
    cw = (WIDTH - left - RIGHT) / max(cols, 1)
    ch = (HEIGHT - TOP - BOTTOM) / max(rows, 1)
    lo, hi = value_range
    parts = [
        f'<figure class="chart" id="{_esc(chart_id)}"><figcaption>{_esc(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-label="{_esc(title)}">'
    ]
    for (c, r), (value, tip) in cells.items():
        share = 0.0 if hi <= lo else (value - lo) / (hi - lo)
        # white -> dark blue as the value rises
        red, green, blue = (int(247 - 200 * share), int(251 - 150 * share), int(255 - 75 * share))
        x, y = left + c * cw, HEIGHT - BOTTOM - (r + 1) * ch
        label = _esc(tip)
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" '
                     f'fill="rgb({red},{green},{blue})" stroke="#fff" data-tip="{label}"><title>{label}</title></rect>'
                     f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" text-anchor="middle" font-size="10" '
                     f'fill="{"#fff" if share > 0.6 else "#222"}" pointer-events="none">{value:.1f}</text>')  # fmt: skip
    parts.append(_colour_scale(lo, hi, f"{chart_id or 'heatmap'}-scale"))
    for c, name in enumerate(x_labels):
        parts.append(
            f'<text x="{left + (c + 0.5) * cw:.1f}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle" font-size="10">{_esc(name)}</text>'
        )
    for r, name in enumerate(y_labels):
        parts.append(
            f'<text x="{left - 5}" y="{HEIGHT - BOTTOM - (r + 0.5) * ch + 4:.1f}" text-anchor="end" font-size="10">{_esc(name)}</text>'
        )
    parts.append(
        f'<text x="{(left + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle" font-size="12">{_esc(x_label)}</text>'
        f'<text transform="translate(12 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" font-size="12">{_esc(y_label)}</text>'
        "</svg></figure>"
    )
    return "".join(parts)


def _colour_scale(lo: float, hi: float, gradient_id: str) -> str:
    """The heatmap's colour scale: a bar from white (``lo``) to dark blue (``hi``), labelled."""
    x, y, width = WIDTH - RIGHT - 150, 6, 90
    return (
        f'<defs><linearGradient id="{_esc(gradient_id)}"><stop offset="0" stop-color="rgb(247,251,255)"/>'
        f'<stop offset="1" stop-color="rgb(47,101,180)"/></linearGradient></defs>'
        f'<text x="{x - 4}" y="{y + 9}" text-anchor="end" font-size="10">colour: best accuracy {lo:.1f}%</text>'
        f'<rect x="{x}" y="{y}" width="{width}" height="10" fill="url(#{_esc(gradient_id)})" stroke="#999"/>'
        f'<text x="{x + width + 4}" y="{y + 9}" font-size="10">{hi:.1f}%</text>'
    )  # fmt: skip


def bars(title: str, values: dict[str, float], *, x_label: str, chart_id: str = "") -> str:
    """Horizontal bars, one per named value (e.g. parameter importances)."""
    if not values:
        return (f'<figure class="chart" id="{_esc(chart_id)}"><figcaption>{_esc(title)}</figcaption>'
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="60"><text x="10" y="30">'
                "needs at least two complete trials that differ</text></svg></figure>")  # fmt: skip
    height = TOP + 26 * len(values) + 30
    top = max(values.values()) or 1.0
    parts = [
        f'<figure class="chart" id="{_esc(chart_id)}"><figcaption>{_esc(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-label="{_esc(title)}">'
    ]
    span = WIDTH - 160 - RIGHT - 40  # room for the value after the longest bar
    for i, (name, value) in enumerate(values.items()):
        y = TOP + i * 26
        label = _esc(f"{name}: {value:.3f}")
        parts.append(f'<text x="150" y="{y + 14}" text-anchor="end" font-size="12">{_esc(name)}</text>'
                     f'<rect x="160" y="{y}" width="{max(span * value / top, 1):.1f}" height="18" fill="{PALETTE[0]}" '
                     f'data-tip="{label}"><title>{label}</title></rect>'
                     f'<text x="{165 + span * value / top:.1f}" y="{y + 14}" font-size="11">{value:.2f}</text>')  # fmt: skip
    parts.append(
        f'<text x="{160 + span / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{_esc(x_label)}</text></svg></figure>'
    )
    return "".join(parts)
