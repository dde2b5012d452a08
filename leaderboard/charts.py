"""Accuracy-vs-cost scatter charts as inline SVG: no script, no CDN, readable
in a screenshot (axis titles with units, legend, Pareto frontier, one line per
model joining its variants, a tooltip per point, each accuracy with its 95 %
interval as an error bar)."""
from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist

from markupsafe import Markup, escape

from evalq.backends.base import variant_rank, variant_style
from evalq.leaderboard.pages import Row, getattr_x, pareto

W, H = 820, 480
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 30, 60
Z95 = NormalDist().inv_cdf(0.975)  # error bars: value ± 1.96 standard errors


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


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}"/>'
    if shape == "triangle":
        return f'<polygon points="{x:.1f},{y - 6:.1f} {x - 6:.1f},{y + 5:.1f} {x + 6:.1f},{y + 5:.1f}" fill="{colour}"/>'
    if shape == "diamond":
        return f'<polygon points="{x:.1f},{y - 7:.1f} {x + 6:.1f},{y:.1f} {x:.1f},{y + 7:.1f} {x - 6:.1f},{y:.1f}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5.5" fill="{colour}"/>'


def scatter(rows: list[Row], x: str, title: str, x_title: str) -> Markup:
    pts = [(r, getattr_x(r, x)) for r in rows if r.ok and r.accuracy is not None and getattr_x(r, x)]
    if not pts:
        return Markup(f'<p class="empty">No measured configuration for “{escape(title)}”.</p>')
    xs = [v for _, v in pts]
    ys = [100 * r.accuracy for r, _ in pts]
    halves = [100 * _half_width(r.accuracy_stderr) for r, _ in pts]
    log = max(xs) / min(xs) > 8
    tx = (lambda v: math.log10(v)) if log else (lambda v: v)
    x_lo, x_hi = tx(min(xs)), tx(max(xs))
    pad = (x_hi - x_lo) * 0.08 or 0.5
    x_lo, x_hi = x_lo - pad, x_hi + pad
    y_lo, y_hi = min(y - h for y, h in zip(ys, halves)), max(y + h for y, h in zip(ys, halves))
    ypad = (y_hi - y_lo) * 0.12 or 2
    y_lo, y_hi = max(0.0, y_lo - ypad), min(100.0, y_hi + ypad)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(v: float) -> float:
        return LEFT + (tx(v) - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return TOP + (1 - (v - y_lo) / (y_hi - y_lo)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="{escape(title)}" class="chart" font-family="DejaVu Sans, sans-serif" font-size="12">',
           f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    if log:
        ticks = [v for e in range(math.floor(x_lo), math.ceil(x_hi) + 1) for v in (10 ** e, 2 * 10 ** e, 5 * 10 ** e)
                 if x_lo <= math.log10(v) <= x_hi]
    else:
        ticks = [v for v in _nice_ticks(x_lo, x_hi) if v > 0]
    for v in ticks:
        out.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#eee"/>'
                   f'<text x="{px(v):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{v:g}</text>')
    for v in _nice_ticks(y_lo, y_hi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 18}" text-anchor="middle" font-size="13">{escape(x_title)}'
               f'{" (log scale)" if log else ""}</text>')
    out.append(f'<text transform="translate(18,{TOP + ph / 2}) rotate(-90)" text-anchor="middle" font-size="13">'
               f'Average accuracy (%)</text>')
    by_model: dict[str, list[tuple[Row, float]]] = defaultdict(list)
    for r, v in pts:
        by_model[r.model].append((r, v))
    for members in by_model.values():
        if len(members) > 1:
            line = " ".join(f"{px(v):.1f},{py(100 * r.accuracy):.1f}" for r, v in sorted(members, key=lambda m: m[1]))
            out.append(f'<polyline points="{line}" fill="none" stroke="#bbb" stroke-width="1.2"/>')
    front = pareto(rows, x)
    if len(front) > 1:
        steps = []
        for i, r in enumerate(front):
            v = getattr_x(r, x)
            if i:
                steps.append(f"{px(v):.1f},{py(100 * front[i - 1].accuracy):.1f}")
            steps.append(f"{px(v):.1f},{py(100 * r.accuracy):.1f}")
        out.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5,3"/>')
    for r, v in sorted(pts, key=lambda p: (p[0].model, p[0].variant)):
        colour, shape = variant_style(r.variant)
        half = 100 * _half_width(r.accuracy_stderr)
        ci = f" (95 % CI {100 * r.accuracy - half:.1f}–{100 * r.accuracy + half:.1f})" if half else ""
        tip = f"{r.model} · {r.variant}: {100 * r.accuracy:.1f}%{ci} at {v:.3g} {'GB' if x == 'memory' else 'ms/token'}"
        bar = _error_bar(px(v), py(100 * r.accuracy - half), py(100 * r.accuracy + half), colour) if half else ""
        out.append(f'<g class="point"><title>{escape(tip)}</title>{bar}{_marker(shape, px(v), py(100 * r.accuracy), colour)}</g>')
    lx, ly = LEFT + pw + 16, TOP + 10
    shown = sorted({r.variant for r, _ in pts}, key=variant_rank)  # the legend names what is plotted
    for i, variant in enumerate(shown):
        colour, shape = variant_style(variant)
        out.append(_marker(shape, lx + 6, ly + 20 * i, colour) + f'<text x="{lx + 18}" y="{ly + 20 * i + 4}">{escape(variant)}</text>')
    n = len(shown)
    out.append(f'<line x1="{lx}" x2="{lx + 14}" y1="{ly + 20 * n}" y2="{ly + 20 * n}" stroke="#d62728" stroke-dasharray="5,3" stroke-width="1.5"/>'
               f'<text x="{lx + 18}" y="{ly + 20 * n + 4}">Pareto frontier</text>'
               f'<line x1="{lx}" x2="{lx + 14}" y1="{ly + 20 * (n + 1)}" y2="{ly + 20 * (n + 1)}" stroke="#bbb"/>'
               f'<text x="{lx + 18}" y="{ly + 20 * (n + 1) + 4}">one model\'s variants</text>'
               f'{_error_bar(lx + 7, ly + 20 * (n + 2) - 6, ly + 20 * (n + 2) + 6, "#555")}'
               f'<text x="{lx + 18}" y="{ly + 20 * (n + 2) + 4}">95 % interval</text>')
    out.append("</svg>")
    return Markup("".join(out))


HW, HH = 420, 240
HLEFT, HRIGHT, HTOP, HBOTTOM = 64, 90, 28, 40


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

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {HW} {HH}" width="{HW}" height="{HH}" role="img" '
           f'aria-label="{escape(title)}" class="chart history" font-family="DejaVu Sans, sans-serif" font-size="11">',
           f'<text x="{HLEFT}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{HLEFT}" y="{HTOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in _nice_ticks(y_lo, y_hi, 4):
        out.append(f'<line x1="{HLEFT}" x2="{HLEFT + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>'
                   f'<text x="{HLEFT - 5}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    step = max(1, math.ceil(len(nights) / 8))
    for i, (run, _) in enumerate(nights):
        if i % step == 0 or i == len(nights) - 1:
            out.append(f'<text x="{px(i):.1f}" y="{HTOP + ph + 14}" text-anchor="middle">{run}</text>')
    out.append(f'<text x="{HLEFT + pw / 2}" y="{HH - 6}" text-anchor="middle">nightly run</text>')
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
            out.append(f'<g class="point"><title>{escape(tip)}</title>{bar}{_marker(shape, px(i), py(v), colour)}{ring}</g>')
        out.append(_marker(shape, HLEFT + pw + 14, HTOP + 8 + 16 * k, colour)
                   + f'<text x="{HLEFT + pw + 24}" y="{HTOP + 12 + 16 * k}">{escape(variant)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
