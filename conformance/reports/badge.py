"""badge.svg: the conformance level reached and the date, drawn by the kit (no badge service, no fetch)."""
from __future__ import annotations

from xml.sax.saxutils import escape

from .._model import RunReport

# Level 0..4: red, orange, yellow-green, green, bright green.
COLORS = ["#c62828", "#ef6c00", "#9e9d24", "#2e7d32", "#1b5e20"]


def _width(text: str) -> int:
    # Verdana 11px averages ~6.6 px a character; narrow ones count less. Padding 10 px each side.
    narrow = sum(1 for ch in text if ch in "il.,:;|!' ")
    return int(round((len(text) - narrow) * 6.8 + narrow * 3.6)) + 12


def render_badge_for(level: int, of: int, name: str, date: str) -> str:
    left = "batchspec"
    right = f"level {level}/{of} · {date}" if level else f"no level · {date}"
    lw, rw = _width(left), _width(right)
    color = COLORS[min(max(level, 0), len(COLORS) - 1)]
    title = escape(f"batchspec conformance: level {level} of {of} ({name}), {date}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lw + rw}" height="20" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        f'<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{lw + rw}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{rw}" height="20" fill="{color}"/>'
        f'<rect width="{lw + rw}" height="20" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{left}</text>'
        f'<text x="{lw / 2:.1f}" y="14">{left}</text>'
        f'<text x="{lw + rw / 2:.1f}" y="15" fill="#010101" fill-opacity=".3">{escape(right)}</text>'
        f'<text x="{lw + rw / 2:.1f}" y="14">{escape(right)}</text></g></svg>\n'
    )


def render_badge(report: RunReport) -> str:
    conf = report.conformance or {}
    return render_badge_for(int(conf.get("reached", 0)), int(conf.get("of", 4)), str(conf.get("name", "none")),
                            (report.finished_at or report.started_at)[:10])
