"""report.md: a summary table per class, then every FAIL/WARN/ERROR with its evidence and a replay."""
from __future__ import annotations

from .._model import RunReport, Verdict

ORDER = ["PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED"]
HINTS = {
    "CORE": "Return one result per item, echoing its id, with status ok/error and data/error.",
    "HTTP": "Answer 200 for every processed batch; reserve 4xx for batches that cannot be processed at all.",
    "PART": "Apply every valid item, leave every invalid one without effect, and say why it failed.",
    "SIZE": "Enforce and document the item and byte limits before doing any work.",
    "PAR": "Make the batch item and the single request the same shape with the same errors.",
    "IDEM": "Store the first response per key (scoped to the client) and replay it; never apply twice.",
    "ASYNC": "Persist the job before answering 202; report monotonic progress until a final state.",
    "ATOM": "Roll everything back on any failure and say which item failed and why.",
    "ORD": "Make dependencies explicit (depends_on) and fail dependents of failed items.",
    "ROB": "Validate strictly and answer hostile input with a 4xx, never a 5xx or a hang.",
    "PERF": "Process a batch in one transaction with prepared statements, not a loop of single requests.",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str | None) -> str:
    body = text or ""
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}\n{body}\n{fence}"


def render_summary(report: RunReport) -> str:
    counts = report.counts()
    lines = [
        f"**Target** `{report.target}` · **profile** `{report.profile}` · started {report.started_at}"
        f" · {report.duration_s:.1f}s · exit code {report.exit_code()}",
        "",
        "| verdict | " + " | ".join(v for v in ORDER) + " |",
        "|---|" + "---|" * len(ORDER),
        "| rules | " + " | ".join(str(counts.get(v, 0)) for v in ORDER) + " |",
        "",
        "| class | " + " | ".join(ORDER) + " |",
        "|---|" + "---|" * len(ORDER),
    ]
    by_cls: dict[str, dict[str, int]] = {}
    for r in report.rules:
        by_cls.setdefault(r.cls, {v: 0 for v in ORDER})[r.verdict.value] += 1
    for cls, c in by_cls.items():
        lines.append(f"| {cls} | " + " | ".join(str(c[v]) if c[v] else "·" for v in ORDER) + " |")
    return "\n".join(lines)


def render_markdown(report: RunReport) -> str:
    out = ["# batchspec report", "", render_summary(report), ""]
    if report.preflight and not report.preflight.get("ok", True):
        out += ["## Preflight failed", "", report.preflight.get("reason", ""), ""]
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    out += ["## Rules", "", "| rule | level | verdict | title | reason |", "|---|---|---|---|---|"]
    for r in report.rules:
        out.append(f"| {r.id} | {r.level} | {r.verdict.value} | {_cell(r.title)} | {_cell(r.reason[:200])} |")
    flagged = [r for r in report.rules if r.verdict in (Verdict.FAIL, Verdict.WARN, Verdict.ERROR, Verdict.WAIVED)]
    if flagged:
        out += ["", "## Findings", ""]
    for r in flagged:
        d = r.deciding_check
        out += [f"### {r.id} — {r.verdict.value} ({r.level})", "", f"> {r.title}", "",
                f"**Why it matters:** {r.rationale}", "", f"**Found:** {r.reason}", ""]
        if d and d.expected is not None:
            out.append(f"- expected: `{_cell(d.expected)}`")
        if d and d.seen is not None:
            out.append(f"- seen: `{_cell(d.seen)}`")
        if d:
            out.append(f"- check: `{d.nodeid}`")
        out.append(f"- hint: {HINTS.get(r.cls, '')}")
        out.append("")
        for i, ex in enumerate(r.evidence[:8], 1):
            status = ex.status if ex.status is not None else f"no response ({ex.error})"
            out.append(f"**Exchange {i}:** `{ex.method} {ex.url}` → {status}" + (f" — {ex.note}" if ex.note else ""))
            out.append("")
            if ex.request_body:
                out += ["Request body:", "", _fence(ex.request_body), ""]
            if ex.response_body:
                out += ["Response body:", "", _fence(ex.response_body), ""]
            out += ["Replay:", "", _fence(ex.curl), ""]
        if len(r.evidence) > 8:
            out.append(f"_{len(r.evidence) - 8} more exchanges in report.json_")
            out.append("")
    return "\n".join(out) + "\n"
