"""Report writers: handlers of one RunReport (JUnit XML, JSON, Markdown, HTML)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .._model import RunReport
from .badge import render_badge
from .har import render_har
from .html import render_html
from .json_report import report_dict, render_json
from .junit import render_junit
from .markdown import render_markdown, render_short

__all__ = ["write_all", "render_badge", "render_har", "report_dict", "render_json", "render_junit", "render_markdown", "render_short", "render_html"]

FILES = {
    "junit.xml": render_junit,
    "report.json": render_json,
    "report.md": render_markdown,
    "report.html": render_html,
    "summary.md": render_short,
    "badge.svg": render_badge,
    "exchanges.har": render_har,
}


def _scrub(text: str, secrets: Iterable[str]) -> str:
    # Evidence is redacted when recorded; this is the last line of defence.
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "<redacted>")
    return text


def write_all(report: RunReport, directory: str | Path, secrets: Iterable[str] = ()) -> dict[str, Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    secrets = list(secrets)
    out = {}
    for name, render in FILES.items():
        path = d / name
        # Hostile evidence (ROB-02) can hold lone surrogates: written escaped, never a crash of the run.
        path.write_text(_scrub(render(report), secrets), encoding="utf-8", errors="backslashreplace")
        out[name] = path
    return out
