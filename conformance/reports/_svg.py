"""Inline SVG charts drawn by the kit for report.html: no library, no fetch, escaped text only.

Input is a check's `series` (conformance.checks.series): `{"name", "x", "y", "unit", "kind", "points"}`.
"line": points are (x, y) numbers, drawn as a polyline with dots over linear axes from 0.
"bar": points are (label, value), drawn as horizontal bars with the value written at the end.
"""
from __future__ import annotations

import html
import math
from typing import Any

W, H = 520, 220
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 28, 40
COLORS = ["#1565c0", "#2e7d32", "#e65100", "#6a1b9a"]


def _e(x: object) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def line_chart(s: dict[str, Any]) -> str:
    pts = [(float(x), float(y)) for x, y in s.get("points") or [] if not isinstance(x, str)]
    if not pts:
        return ""
    xmax = _nice_max(max(x for x, _ in pts))
    ymax = _nice_max(max(y for _, y in pts))
    iw, ih = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + iw * x / xmax

    def py(y: float) -> float:
        return PAD_T + ih * (1 - y / ymax)

    grid = []
    for k in range(5):
        yv = ymax * k / 4
        grid.append(f"<line x1='{PAD_L}' y1='{py(yv):.1f}' x2='{W - PAD_R}' y2='{py(yv):.1f}' stroke='#e4e7ec'/>"
                    f"<text x='{PAD_L - 6}' y='{py(yv) + 4:.1f}' text-anchor='end'>{_num(yv)}</text>")
        xv = xmax * k / 4
        grid.append(f"<text x='{px(xv):.1f}' y='{H - PAD_B + 16}' text-anchor='middle'>{_num(xv)}</text>")
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
    if len({x for x, _ in pts}) < 2:
        # One reading (a job already finished at the first poll): say so rather than draw a lone dot silently.
        grid.append(f"<text x='{PAD_L + iw / 2:.1f}' y='{PAD_T + ih / 2:.1f}' text-anchor='middle' class='axis'>"
                    f"one reading only: nothing changed while the kit watched</text>")
    dots = "".join(f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3'><title>{_e(_num(x))} {_e(s.get('x'))}: "
                   f"{_e(_num(y))} {_e(s.get('y'))}</title></circle>" for x, y in pts)
    return _frame(s, "".join(grid)
                  + f"<polyline points='{line}' fill='none' stroke='{COLORS[0]}' stroke-width='2'/>"
                  + f"<g fill='{COLORS[0]}'>{dots}</g>"
                  + f"<text x='{PAD_L + iw / 2:.1f}' y='{H - 6}' text-anchor='middle' class='axis'>{_e(s.get('x'))}</text>"
                  + f"<text x='12' y='{PAD_T + ih / 2:.1f}' text-anchor='middle' class='axis' "
                    f"transform='rotate(-90 12 {PAD_T + ih / 2:.1f})'>{_e(s.get('y'))}</text>")


def bar_chart(s: dict[str, Any]) -> str:
    pts = [(str(label), float(v)) for label, v in s.get("points") or []]
    if not pts:
        return ""
    vmax = max(v for _, v in pts) or 1.0
    label_w = 190
    bar_h, gap = 26, 12
    h = PAD_T + len(pts) * (bar_h + gap) + 18
    iw = W - label_w - PAD_R - 90
    bars = []
    for i, (label, v) in enumerate(pts):
        y = PAD_T + i * (bar_h + gap)
        w = max(1.0, iw * v / vmax)
        bars.append(f"<text x='{label_w - 8}' y='{y + bar_h / 2 + 4:.1f}' text-anchor='end'>{_e(label)}</text>"
                    f"<rect x='{label_w}' y='{y}' width='{w:.1f}' height='{bar_h}' fill='{COLORS[i % len(COLORS)]}' rx='2'>"
                    f"<title>{_e(label)}: {_e(_num(v))} {_e(s.get('unit'))}</title></rect>"
                    f"<text x='{label_w + w + 6:.1f}' y='{y + bar_h / 2 + 4:.1f}'>{_e(_num(v))} {_e(s.get('unit'))}</text>")
    return _frame(s, "".join(bars), height=h)


def _frame(s: dict[str, Any], body: str, height: int = H) -> str:
    return (f"<svg class='chart' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {W} {height}' width='{W}' "
            f"height='{height}' role='img' aria-label='{_e(s.get('name'))}'>"
            f"<style>text{{font:11px system-ui,sans-serif;fill:#1d2330}}.axis{{fill:#5b6878}}</style>"
            f"<text x='{PAD_L}' y='16' style='font-weight:600'>{_e(s.get('name'))}</text>{body}</svg>")


def chart(s: dict[str, Any]) -> str:
    """One series as an inline SVG ("" when it has nothing to draw)."""
    try:
        return bar_chart(s) if s.get("kind") == "bar" else line_chart(s)
    except (TypeError, ValueError):  # a malformed series never breaks the page
        return ""
