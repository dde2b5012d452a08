"""Accuracy-vs-cost scatter charts as inline SVG: no CDN, readable in a
screenshot (axis titles with units, a legend of what is plotted, the Pareto
frontier with its points named, one line per model joining its variants, each
accuracy with its 95 % interval as an error bar). Every point is focusable and
labelled (the page's script shows the label as a tooltip on focus, hover and
touch), and `points` gives the same as text for a table under the chart.
Colours of text and lines come from the page's style sheet (light and dark)."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from statistics import NormalDist

from markupsafe import Markup, escape

from evalq.backends.base import variant_rank, variant_style
from evalq.leaderboard.pages import Row, getattr_x, pareto

# The scatter's own units: scaled to the page's width by its viewBox (phones included);
# the legend sits under the plot so the plot keeps the width.
W, LEFT, RIGHT, TOP, PLOT_H = 560, 64, 16, 34, 300
LEGEND_ROW, LEGEND_COLS = 22, 2
Z95 = NormalDist().inv_cdf(0.975)  # error bars: value ± 1.96 standard errors
PARETO = "#d62728"


def _error_bar(x: float, y_lo: float, y_hi: float, colour: str, cap: float = 4) -> str:
    return (f'<path class="error-bar" d="M{x:.1f},{y_lo:.1f}V{y_hi:.1f}M{x - cap:.1f},{y_lo:.1f}H{x + cap:.1f}'
            f'M{x - cap:.1f},{y_hi:.1f}H{x + cap:.1f}" stroke="{colour}" stroke-width="1" fill="none" opacity="0.7"/>')


def _half_width(stderr: float | None) -> float:
    return Z95 * stderr if stderr else 0.0


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 in each decade from lo to hi (both > 0); the powers of ten alone where that spans more than three."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1, 2, 5) if last - first <= 3 else (1,)
    return [m * 10.0 ** e for e in range(first, last + 1) for m in steps if lo <= m * 10.0 ** e <= hi]


def _polygon(x: float, y: float, r: float, n: int, turn: float = -90.0, inner: float | None = None) -> str:
    """A regular polygon (a star when `inner` is the inner radius) centred on x, y."""
    corners = n * 2 if inner else n
    pts = []
    for i in range(corners):
        radius = inner if inner and i % 2 else r
        a = math.radians(turn + 360 * i / corners)
        pts.append(f"{x + radius * math.cos(a):.1f},{y + radius * math.sin(a):.1f}")
    return " ".join(pts)


SHAPES = ("circle", "square", "triangle", "triangle-down", "diamond", "pentagon", "hexagon", "star")


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    """A point's marker: `shape` one of SHAPES, "open-<shape>" drawn as an outline."""
    open_ = shape.startswith("open-")
    shape = shape.removeprefix("open-")
    paint = f'fill="none" stroke="{colour}" stroke-width="2"' if open_ else f'fill="{colour}"'
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" {paint}/>'
    polygons = {"triangle": (6.5, 3, -90.0, None), "triangle-down": (6.5, 3, 90.0, None), "diamond": (7, 4, -90.0, None),
                "pentagon": (6.5, 5, -90.0, None), "hexagon": (6.5, 6, 0.0, None), "star": (7.5, 5, -90.0, 3.2)}
    if shape in polygons:
        r, n, turn, inner = polygons[shape]
        return f'<polygon points="{_polygon(x, y, r, n, turn, inner)}" {paint}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" {paint}/>'


def _unit(x: str) -> str:
    return "GB" if x == "memory" else "ms/token"


def points(rows: list[Row], x: str) -> list[dict]:
    """What a scatter plots, as text: its alternative for screen readers and a table under the chart."""
    front = {r.key for r in pareto(rows, x)}
    out = []
    for r in sorted(rows, key=lambda r: (r.model, variant_rank(r.variant))):
        v = getattr_x(r, x) if r.ok and r.accuracy is not None else None
        if v:
            half = 100 * _half_width(r.accuracy_stderr)
            out.append({"model": r.model, "variant": r.variant, "accuracy": 100 * r.accuracy,
                        "lo": 100 * r.accuracy - half if half else None, "hi": 100 * r.accuracy + half if half else None,
                        "x": v, "unit": _unit(x), "frontier": r.key in front})
    return out


def _tip(p: dict) -> str:
    ci = f" (95 % CI {p['lo']:.1f}–{p['hi']:.1f})" if p["lo"] is not None else ""
    return f"{p['model']} · {p['variant']}: {p['accuracy']:.1f}%{ci} at {p['x']:.3g} {p['unit']}" + (
        ", on the Pareto frontier" if p["frontier"] else "")


@dataclass(frozen=True)
class _Frame:
    """A scatter chart's plot area: data ranges to pixels (x on a log scale where it spans 8×)."""

    log: bool
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float
    pw: float = W - LEFT - RIGHT
    ph: float = PLOT_H

    def tx(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def px(self, v: float) -> float:
        return LEFT + (self.tx(v) - self.x_lo) / (self.x_hi - self.x_lo) * self.pw

    def py(self, v: float) -> float:
        return TOP + (1 - (v - self.y_lo) / (self.y_hi - self.y_lo)) * self.ph


def _frame(xs: list[float], ys: list[float], halves: list[float]) -> _Frame:
    log = max(xs) / min(xs) > 8
    tx = (lambda v: math.log10(v)) if log else (lambda v: v)
    x_lo, x_hi = tx(min(xs)), tx(max(xs))
    pad = (x_hi - x_lo) * 0.08 or 0.5
    y_lo, y_hi = min(y - h for y, h in zip(ys, halves)), max(y + h for y, h in zip(ys, halves))
    ypad = (y_hi - y_lo) * 0.12 or 2
    return _Frame(log, x_lo - pad, x_hi + pad, max(0.0, y_lo - ypad), min(100.0, y_hi + ypad))


def _axes(f: _Frame, title: str, x_title: str, height: float) -> list[str]:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" role="group" '
           f'aria-label="{escape(title)}: a point per configuration; the table under the chart lists them" class="chart" '
           f'font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<text x="{LEFT}" y="20" class="title">{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{f.pw}" height="{f.ph}" class="frame"/>']
    ticks = _log_ticks(10 ** f.x_lo, 10 ** f.x_hi) if f.log else [v for v in _nice_ticks(f.x_lo, f.x_hi) if v > 0]
    for v in ticks:
        out.append(f'<line x1="{f.px(v):.1f}" x2="{f.px(v):.1f}" y1="{TOP}" y2="{TOP + f.ph}" class="grid"/>'
                   f'<text x="{f.px(v):.1f}" y="{TOP + f.ph + 16}" text-anchor="middle" class="tick">{v:g}</text>')
    for v in _nice_ticks(f.y_lo, f.y_hi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + f.pw}" y1="{f.py(v):.1f}" y2="{f.py(v):.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{f.py(v) + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>')
    out.append(f'<text x="{LEFT + f.pw / 2}" y="{TOP + f.ph + 40}" text-anchor="middle" class="axis">{escape(x_title)}'
               f'{" (log scale)" if f.log else ""}</text>')
    out.append(f'<text transform="translate(16,{TOP + f.ph / 2}) rotate(-90)" text-anchor="middle" class="axis">'
               f'Average accuracy (%)</text>')
    return out


def _lines(f: _Frame, pts: list[tuple[Row, float]], front: list[Row], x: str) -> list[str]:
    """A line through each model's variants, and the Pareto frontier as a dashed staircase."""
    out = []
    by_model: dict[str, list[tuple[Row, float]]] = defaultdict(list)
    for r, v in pts:
        by_model[r.model].append((r, v))
    for members in by_model.values():
        if len(members) > 1:
            line = " ".join(f"{f.px(v):.1f},{f.py(100 * r.accuracy):.1f}" for r, v in sorted(members, key=lambda m: m[1]))
            out.append(f'<polyline points="{line}" class="model-line"/>')
    if len(front) > 1:
        steps = []
        for i, r in enumerate(front):
            v = getattr_x(r, x)
            if i:
                steps.append(f"{f.px(v):.1f},{f.py(100 * front[i - 1].accuracy):.1f}")
            steps.append(f"{f.px(v):.1f},{f.py(100 * r.accuracy):.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="{PARETO}" stroke-width="1.5" stroke-dasharray="5,3"/>')
    return out


def _frontier_labels(f: _Frame, front: list[Row], x: str) -> list[str]:
    """The frontier's points named: right of the point (left near the right edge), labels pushed apart vertically."""
    out, placed = [], []
    for r in sorted(front, key=lambda r: -r.accuracy):
        x0, y0 = f.px(getattr_x(r, x)), f.py(100 * r.accuracy)
        right = x0 < LEFT + f.pw * 0.6
        ly = max([y0 + 4] + [y + 15 for y in placed])
        placed.append(ly)
        lx = x0 + (10 if right else -10)
        if ly - (y0 + 4) > 6:  # moved off its point: a leader line says whose label it is
            out.append(f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}" class="leader"/>')
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{"start" if right else "end"}" '
                   f'class="point-label">{escape(r.model)} {escape(r.variant)}</text>')
    return out


def _legend(shown: list[str], top: float) -> list[str]:
    out = []
    col_w = (W - LEFT) / LEGEND_COLS
    for i, label in enumerate(shown + ["Pareto frontier", "one model's variants", "95 % interval"]):
        lx, ly = LEFT + col_w * (i % LEGEND_COLS), top + LEGEND_ROW * (i // LEGEND_COLS)
        if i < len(shown):
            colour, shape = variant_style(label)
            key = _marker(shape, lx + 7, ly, colour)
        elif label == "Pareto frontier":
            key = f'<line x1="{lx}" x2="{lx + 14}" y1="{ly}" y2="{ly}" stroke="{PARETO}" stroke-dasharray="5,3" stroke-width="1.5"/>'
        elif label == "95 % interval":
            key = _error_bar(lx + 7, ly - 6, ly + 6, "currentColor")
        else:
            key = f'<line x1="{lx}" x2="{lx + 14}" y1="{ly}" y2="{ly}" class="model-line"/>'
        out.append(f'{key}<text x="{lx + 20}" y="{ly + 4}" class="legend">{escape(label)}</text>')
    return out


def scatter(rows: list[Row], x: str, title: str, x_title: str) -> Markup:
    pts = [(r, getattr_x(r, x)) for r in rows if r.ok and r.accuracy is not None and getattr_x(r, x)]
    if not pts:
        return Markup(f'<p class="empty">No measured configuration for “{escape(title)}”.</p>')
    f = _frame([v for _, v in pts], [100 * r.accuracy for r, _ in pts], [100 * _half_width(r.accuracy_stderr) for r, _ in pts])
    shown = sorted({r.variant for r, _ in pts}, key=variant_rank)  # the legend names what is plotted
    legend_top = TOP + f.ph + 58
    height = legend_top + LEGEND_ROW * math.ceil((len(shown) + 3) / LEGEND_COLS) + 6
    front = pareto(rows, x)
    out = _axes(f, title, x_title, height) + _lines(f, pts, front, x)
    described = {(p["model"], p["variant"]): p for p in points(rows, x)}
    for r, v in sorted(pts, key=lambda p: (p[0].model, p[0].variant)):
        colour, shape = variant_style(r.variant)
        half = 100 * _half_width(r.accuracy_stderr)
        bar = _error_bar(f.px(v), f.py(100 * r.accuracy - half), f.py(100 * r.accuracy + half), colour) if half else ""
        out.append(f'<g class="point" tabindex="0" role="img" aria-label="{escape(_tip(described[(r.model, r.variant)]))}">'
                   f'{bar}{_marker(shape, f.px(v), f.py(100 * r.accuracy), colour)}</g>')
    out += _frontier_labels(f, front, x) + _legend(shown, legend_top)
    out.append("</svg>")
    return Markup("".join(out))


HW, HH = 420, 240
HLEFT, HRIGHT, HTOP, HBOTTOM = 64, 90, 28, 40


def _line_frame(title: str, kind: str, width: float, pw: float, ph: float, y_ticks: list[float], py) -> list[str]:
    """A line chart's opening: the svg, its title, the plot's frame and the y grid with its ticks."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {HH}" role="group" aria-label="{escape(title)}" '
           f'class="chart {kind}" font-family="DejaVu Sans, sans-serif" font-size="11">',
           f'<text x="{HLEFT}" y="16" class="title">{escape(title)}</text>',
           f'<rect x="{HLEFT}" y="{HTOP}" width="{pw}" height="{ph}" class="frame"/>']
    for v in y_ticks:
        out.append(f'<line x1="{HLEFT}" x2="{HLEFT + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="grid"/>'
                   f'<text x="{HLEFT - 5}" y="{py(v) + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>')
    return out


def history(title: str, nights: list[tuple[int, str]], series: dict[str, list[tuple[int, float, bool]]]) -> Markup:
    """One metric of one model over the nightly runs: a line per variant.
    nights: (run id, date) in order; series: variant → (run id, value, flagged
    a regression that night, half-width of its 95 % interval or None). A
    flagged point gets a red ring; an interval, an error bar."""
    values = [v + side * (h or 0) for pts in series.values() for _, v, _, h in pts for side in (-1, 1)]
    if not values or not nights:
        return Markup("")
    index = {run: i for i, (run, _) in enumerate(nights)}
    y_lo, y_hi = min(values), max(values)
    pad = (y_hi - y_lo) * 0.12 or abs(y_hi) * 0.05 or 1
    y_lo, y_hi = y_lo - pad, y_hi + pad
    pw, ph = HW - HLEFT - HRIGHT, HH - HTOP - HBOTTOM
    span = max(1, len(nights) - 1)

    def px(i: int) -> float:
        return HLEFT + (i / span if len(nights) > 1 else 0.5) * pw

    def py(v: float) -> float:
        return HTOP + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    out = _line_frame(title, "history", HW, pw, ph, _nice_ticks(y_lo, y_hi, 4), py)
    step = max(1, math.ceil(len(nights) / 8))
    for i, (run, _) in enumerate(nights):
        if i % step == 0 or i == len(nights) - 1:
            out.append(f'<text x="{px(i):.1f}" y="{HTOP + ph + 14}" text-anchor="middle" class="tick">{run}</text>')
    out.append(f'<text x="{HLEFT + pw / 2}" y="{HH - 6}" text-anchor="middle" class="axis">nightly run</text>')
    for k, (variant, pts) in enumerate(sorted(series.items())):
        colour, shape = variant_style(variant)
        pts = sorted((index[r], v, flag, r, h) for r, v, flag, h in pts if r in index)
        if len(pts) > 1:
            line = " ".join(f"{px(i):.1f},{py(v):.1f}" for i, v, _, _, _ in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for i, v, flag, run, h in pts:
            ci = f" (95 % CI {v - h:.4g}–{v + h:.4g})" if h else ""
            tip = f"{variant}, night {run} ({nights[i][1]}): {v:.6g}{ci}" + (" — regression" if flag else "")
            ring = f'<circle cx="{px(i):.1f}" cy="{py(v):.1f}" r="8" fill="none" stroke="#d62728" stroke-width="2"/>' if flag else ""
            bar = _error_bar(px(i), py(v - h), py(v + h), colour, cap=3) if h else ""
            out.append(f'<g class="point" tabindex="0" role="img" aria-label="{escape(tip)}">{bar}{_marker(shape, px(i), py(v), colour)}{ring}</g>')
        out.append(_marker(shape, HLEFT + pw + 14, HTOP + 8 + 16 * k, colour)
                   + f'<text x="{HLEFT + pw + 24}" y="{HTOP + 12 + 16 * k}" class="legend">{escape(variant)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def serve_curve(title: str, series: dict[str, list[tuple[float, float, str]]], x_title: str, y_title: str,
                limit: float | None = None) -> Markup:
    """A throughput–latency curve per variant from a serving sweep: each point is one
    request rate, at the throughput it achieved (x) and its p90 latency (y), joined in
    the order of the rates (past saturation the achieved throughput can fall back); `limit`,
    the SLO, as a dashed line. series: variant → (x, y, the rate's label). Where the
    latencies span a decade or more (queueing past saturation: seconds against the
    SLO's milliseconds), the y axis is logarithmic so the region near the SLO stays legible."""
    pts_all = [(x, y) for pts in series.values() for x, y, _ in pts if x is not None and y is not None]
    if not pts_all:
        return Markup("")
    xs, ys = [p[0] for p in pts_all], [p[1] for p in pts_all] + ([limit] if limit else [])
    x_lo, x_hi = 0.0, max(xs) * 1.1 or 1
    measured = [p[1] for p in pts_all]
    log_y = min(measured) > 0 and max(measured) >= 10 * min(measured)  # the data's span decides, not the SLO's place
    if log_y:
        y_lo, y_hi = math.log10(min(ys) / 1.25), math.log10(max(ys) * 1.25)
        y_ticks = _log_ticks(10 ** y_lo, 10 ** y_hi)
    else:
        y_lo, y_hi = 0.0, max(ys) * 1.1 or 1
        y_ticks = _nice_ticks(y_lo, y_hi, 4)
    width = HW + 20  # a wider legend: variant names such as gguf-q4_k_m
    pw, ph = width - HLEFT - HRIGHT - 20, HH - HTOP - HBOTTOM

    def px(v: float) -> float:
        return HLEFT + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        v = math.log10(v) if log_y else v
        return HTOP + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    out = _line_frame(title, "serve", width, pw, ph, y_ticks, py)
    for v in _nice_ticks(x_lo, x_hi, 5):
        out.append(f'<text x="{px(v):.1f}" y="{HTOP + ph + 14}" text-anchor="middle" class="tick">{v:g}</text>')
    out.append(f'<text x="{HLEFT + pw / 2}" y="{HH - 6}" text-anchor="middle" class="axis">{escape(x_title)}</text>'
               f'<text transform="translate(12,{HTOP + ph / 2}) rotate(-90)" text-anchor="middle" class="axis">{escape(y_title + (" (log scale)" if log_y else ""))}</text>')
    if limit:
        out.append(f'<line x1="{HLEFT}" x2="{HLEFT + pw}" y1="{py(limit):.1f}" y2="{py(limit):.1f}" stroke="{PARETO}" '
                   f'stroke-dasharray="4 3" class="slo"/><text x="{HLEFT + pw - 2}" y="{py(limit) - 3:.1f}" text-anchor="end" '
                   f'class="tick">SLO {limit:g}</text>')
    for k, (variant, pts) in enumerate(sorted(series.items(), key=lambda kv: variant_rank(kv[0]))):
        colour, shape = variant_style(variant)
        pts = [(x, y, label) for x, y, label in pts if x is not None and y is not None]  # in the sweep's order of rates
        if len(pts) > 1:
            line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in pts)
            out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y, label in pts:
            tip = f"{variant}, rate {label}/s: {x:.3g} on x, p90 {y:.4g}"
            out.append(f'<g class="point" tabindex="0" role="img" aria-label="{escape(tip)}">{_marker(shape, px(x), py(y), colour)}</g>')
        out.append(_marker(shape, HLEFT + pw + 14, HTOP + 8 + 16 * k, colour)
                   + f'<text x="{HLEFT + pw + 24}" y="{HTOP + 12 + 16 * k}" class="legend">{escape(variant)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
