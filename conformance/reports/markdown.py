"""report.md (the full report) and summary.md (short enough for a CI step summary or a PR comment).

report.md: a summary table per class, then every FAIL/WARN/ERROR/WAIVED rule with the rule text,
expected vs seen, a hint, and each exchange of the deciding checks with a curl replay.
"""
from __future__ import annotations

from .._levels import headline
from .._model import RuleResult, RunReport, Verdict
from .json_report import deciding, deciding_checks, summary_dict

ORDER = ["PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED"]
FLAGGED = (Verdict.FAIL, Verdict.ERROR, Verdict.WARN, Verdict.WAIVED)
MAX_EXCHANGES = 8
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


def _words(text: str, limit: int) -> str:
    """Cut at a word boundary, never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _code(text: object) -> str:
    """Inline code that survives backticks in the value."""
    body = _cell(text)
    ticks = "`"
    while ticks in body:
        ticks += "`"
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{ticks}{pad}{body}{pad}{ticks}"


def _fence(text: str | None, lang: str = "") -> str:
    body = text or ""
    fence = "```"
    while fence in body:
        fence += "`"
    return f"{fence}{lang}\n{body}\n{fence}"


def _must_line(report: RunReport) -> str:
    s = summary_dict(report)
    ev, ok = s["must_evaluated"], s["must_passed"]
    pct = f"{100 * ok / ev:.0f}%" if ev else "n/a"
    return f"**MUST compliance: {pct}** ({ok} of {ev} evaluated MUST rules pass)"


def extra_reason(r: RuleResult) -> str:
    """The reason without the qualifier the label already shows (a partial PASS starts with it)."""
    q = r.qualifier()
    if q and r.reason.startswith(q):
        return r.reason[len(q):].lstrip("; ")
    return r.reason


def _level_line(report: RunReport) -> str:
    return f"**Conformance:** {headline(report.conformance)}" if report.conformance else ""


def _partial_line(report: RunReport) -> str:
    n = sum(1 for r in report.rules if r.verdict == Verdict.PASS and r.partial)
    return (f"**{n} rule(s) passed partially** (a check skipped or a decisive state not observed): "
            + ", ".join(r.id for r in report.rules if r.verdict == Verdict.PASS and r.partial)) if n else ""


def render_summary(report: RunReport) -> str:
    counts = report.counts()
    lines = [
        f"**Target** `{report.target}` · **profile** `{report.profile}` · started {report.started_at}"
        f" · {report.duration_s:.1f}s · exit code {report.exit_code()}",
        "",
        _level_line(report),
        "",
    ]
    if getattr(report, "interrupted", None):
        lines += [f"**⚠ {report.interrupted['message']} ({report.interrupted['signal']}): this report is "
                  "incomplete; the rules not reached are SKIP.**", ""]
    if getattr(report, "target_stopped", None):
        lines += [f"**⚠ {report.target_stopped['message']}**", ""]
    lines += [
        _must_line(report),
        "",
        *([_partial_line(report), ""] if _partial_line(report) else []),
        "| class | " + " | ".join(ORDER) + " |",
        "|---|" + "---:|" * len(ORDER),
    ]
    by_cls: dict[str, dict[str, int]] = {}
    for r in report.rules:
        by_cls.setdefault(r.cls, {v: 0 for v in ORDER})[r.verdict.value] += 1
    for cls, c in by_cls.items():
        lines.append(f"| {cls} | " + " | ".join(str(c[v]) if c[v] else "·" for v in ORDER) + " |")
    lines.append("| **all** | " + " | ".join(f"**{counts.get(v, 0)}**" for v in ORDER) + " |")
    return "\n".join(lines)


def _waiver_lines(report: RunReport) -> list[str]:
    waivers = getattr(report, "waivers", None) or []
    if not waivers:
        return []
    out = ["## Waivers", "", "| rule | status | expires | reason | detail |", "|---|---|---|---|---|"]
    for w in waivers:
        out.append(f"| {w['rule']} | {w.get('status')} | {w.get('expires')} | {_cell(w.get('reason', ''))} | "
                   f"{_cell(w.get('detail', ''))} |")
    return out + [""]


def _levels_lines(report: RunReport) -> list[str]:
    conf = report.conformance
    if not conf:
        return []
    out = ["## Conformance level", "", headline(conf), "",
           "| level | name | classes | reached | blocked by |", "|---:|---|---|---|---|"]
    for lv in conf.get("levels", []):
        b = lv["blockers"]
        blocked = "; ".join(f"{x['rule']} {x['verdict']}: {_cell(_words(x['reason'], 120))}" if x.get("rule")
                            else _cell(x["reason"]) for x in b[:10]) + (f"; … {len(b) - 10} more" if len(b) > 10 else "")
        out.append(f"| {lv['level']} | {lv['name']} | {', '.join(lv['adds'])} | {'yes' if lv['reached'] else 'no'} | "
                   f"{blocked or '·'} |")
    na = list({x["rule"]: x for lv in conf.get("levels", []) for x in lv.get("not_applicable", [])}.values())
    if na:
        out += ["", "Skips that count for a level (the rule does not apply to this kind of target): "
                + "; ".join(f"{x['rule']} ({x['because']})" for x in na)]
    return out + [""]


def _partial_lines(report: RunReport) -> list[str]:
    part = [r for r in report.rules if r.verdict == Verdict.PASS and r.partial]
    if not part:
        return []
    out = ["## Passed partially", "", "A rule's verdict is the worst of its checks and PASS outranks SKIP; these "
           "passes rest on fewer checks or states than the rule covers.", "", "| rule | verdict |", "|---|---|"]
    out += [f"| {r.id} | {_cell(r.label())} |" for r in part]
    return out + [""]


def render_short(report: RunReport) -> str:
    """summary.md: the table and one line per finding, for $GITHUB_STEP_SUMMARY or a PR comment."""
    out = ["## batchspec", "", render_summary(report), ""]
    if report.preflight and not report.preflight.get("ok", True):
        out += [f"**Preflight failed:** {report.preflight.get('reason', '')}", ""]
    flagged = [r for r in report.rules if r.verdict in FLAGGED]
    if flagged:
        out += ["| verdict | rule | level | title | reason |", "|---|---|---|---|---|"]
        for r in flagged:
            out.append(f"| {r.verdict.value} | {r.id} | {r.level} | {_cell(r.title)} | {_cell(_words(r.reason, 200))} |")
        out.append("")
    part = [r for r in report.rules if r.verdict == Verdict.PASS and r.partial]
    if part:
        out += ["Passed partially:", ""] + [f"- {r.id}: {_cell(r.label())}" for r in part] + [""]
    out += [f"- {n}" for n in report.notes]
    out.append("")
    out.append("Evidence, exchanges and curl replays: `report.html` / `report.md` in the run's artifacts.")
    return "\n".join(out) + "\n"


def _finding(r: RuleResult) -> list[str]:
    d = deciding(r)
    out = [f"### {r.id} — {r.verdict.value} ({r.level})", "", f"> **{r.id} {r.level}:** {r.title}", "",
           f"**Why it matters:** {r.rationale} _(seed: {r.seed})_", "", f"**Found:** {r.reason}", ""]
    if r.waiver:
        w = r.waiver
        out += [f"**Waiver ({w.get('status')}):** {w.get('reason')} — expires {w.get('expires')}", ""]
    if d and d.expected is not None:
        out.append(f"- expected: {_code(d.expected)}")
    if d and d.seen is not None:
        out.append(f"- seen: {_code(d.seen)}")
    if d:
        out.append(f"- check: `{d.nodeid}`")
    out.append(f"- hint: {HINTS.get(r.cls, '')}")
    out.append("")
    exchanges = [ex for c in deciding_checks(r) for ex in c.evidence]
    for i, ex in enumerate(exchanges[:MAX_EXCHANGES], 1):
        status = ex.status if ex.status is not None else f"no response ({ex.error})"
        out.append(f"**Exchange {i}:** `{ex.method} {ex.url}` → {status}" + (f" — {ex.note}" if ex.note else ""))
        out.append("")
        if ex.request_body:
            out += ["Request body:", "", _fence(ex.request_body), ""]
        if ex.status is not None:
            ctype = next((v for k, v in ex.response_headers.items() if k.lower() == "content-type"), "")
            out += [f"Response {ex.status}" + (f" ({ctype})" if ctype else "") + ":", "",
                    _fence(ex.response_body or "(empty body)"), ""]
        out += ["Replay:", "", _fence(ex.curl, "sh"), ""]
    if len(exchanges) > MAX_EXCHANGES:
        out += [f"_{len(exchanges) - MAX_EXCHANGES} more exchanges in report.json / report.html_", ""]
    return out


def render_markdown(report: RunReport) -> str:
    out = ["# batchspec report", "", render_summary(report), ""]
    if report.preflight and not report.preflight.get("ok", True):
        out += ["## Preflight failed", "", report.preflight.get("reason", ""), ""]
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    out += _waiver_lines(report)
    out += _levels_lines(report)
    out += _partial_lines(report)
    out += ["## Rules", "", "| rule | level | verdict | title | reason |", "|---|---|---|---|---|"]
    for r in report.rules:
        out.append(f"| {r.id} | {r.level} | {_cell(r.label())} | {_cell(r.title)} | {_cell(_words(extra_reason(r), 200))} |")
    flagged = [r for r in report.rules if r.verdict in FLAGGED]
    if flagged:
        out += ["", "## Findings", ""]
    for r in flagged:
        out += _finding(r)
    return "\n".join(out) + "\n"
