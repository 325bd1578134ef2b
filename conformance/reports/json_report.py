"""report.json: the public, versioned contract (schemas/report.schema.json, docs/report-format.md)."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from .._model import RuleResult, RunReport, Verdict

# Evidence kept per rule: enough to audit and replay, bounded so a fuzzing run stays a readable file.
MAX_EVIDENCE = {"PASS": 20, "default": 100}
NOT_EVALUATED = (Verdict.SKIP, Verdict.PENDING)


def deciding_checks(r: RuleResult) -> list:
    # For a WAIVED rule the deciding checks are the ones that FAILed.
    decided = Verdict.FAIL if r.verdict == Verdict.WAIVED else r.verdict
    return [c for c in r.checks if c.verdict == decided] or r.checks


# Verdicts whose evidence is summarised unless --evidence all: nothing to audit in a PASS beyond what was
# sent and what came back, and a full run's PASS evidence made report.json ~900 KB. exchanges.har has it all.
SUMMARISED = (Verdict.PASS,)


def _route(url: str) -> str:
    """/orders/bs-2611...-7-1-ce8a -> /orders/{id}: item and job ids would make every request its own row."""
    segs = (urlsplit(url).path or "/").split("/")
    return "/".join("{id}" if any(ch.isdigit() for ch in seg) and (len(seg) >= 8 or "-" in seg) else seg
                    for seg in segs) or "/"


def evidence_summary(r: RuleResult) -> dict[str, Any]:
    """What the rule's checks exchanged, without the exchanges: counts by request and by status."""
    exs = [ex for c in r.checks for ex in c.evidence]
    reqs: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for ex in exs:
        reqs[f"{ex.method} {_route(ex.url)}"] += 1
        statuses[str(ex.status) if ex.status is not None else "no response"] += 1
    return {"exchanges": len(exs), "requests": dict(reqs.most_common()), "statuses": dict(sorted(statuses.items())),
            "elapsed_ms": round(sum(ex.elapsed_ms or 0 for ex in exs), 1)}


def _evidence(r: RuleResult, mode: str = "summary") -> tuple[list[dict[str, Any]], int]:
    if r.verdict in NOT_EVALUATED:
        return [], 0
    if mode != "all" and r.verdict in SUMMARISED:
        return [], sum(len(c.evidence) for c in r.checks)
    out: list[dict[str, Any]] = []
    for c in deciding_checks(r):
        for ex in c.evidence:
            out.append(ex.to_dict() | {"check": c.name})
    cap = MAX_EVIDENCE.get(r.verdict.value, MAX_EVIDENCE["default"])
    return out[:cap], max(0, len(out) - cap)


def deciding(r: RuleResult):
    """The check that decided the rule's verdict (for WAIVED: the check that FAILed)."""
    decided = Verdict.FAIL if r.verdict == Verdict.WAIVED else r.verdict
    for c in r.checks:
        if c.verdict == decided:
            return c
    return None


def rule_dict(r: RuleResult, evidence_mode: str = "summary") -> dict[str, Any]:
    d = deciding(r)
    evidence, omitted = _evidence(r, evidence_mode)
    return {
        "id": r.id,
        "class": r.cls,
        "level": r.level,
        "title": r.title,
        "rationale": r.rationale,
        "seed": r.seed,
        "verdict": r.verdict.value,
        "label": r.label(),
        "partial": r.partial,
        "checks_run": len(r.checks) - len(r.skipped_checks),
        "checks_skipped": [{"name": c.name, "reason": c.reason} for c in r.skipped_checks],
        "not_observed": r.not_observed,
        "reason": r.reason,
        "expected": None if d is None or d.expected is None else str(d.expected),
        "seen": None if d is None or d.seen is None else str(d.seen),
        "checks": [c.to_dict() | {"requirement": c.requirement} for c in r.checks],
        "evidence": evidence,
        "evidence_omitted": omitted,
        "evidence_summary": evidence_summary(r) if r.checks else None,
        "waiver": r.waiver,
    }


def summary_dict(report: RunReport) -> dict[str, Any]:
    counts = report.counts()
    must = [r for r in report.rules if r.level.startswith("MUST") and r.verdict not in NOT_EVALUATED]
    by_class: dict[str, dict[str, Any]] = {}
    for r in report.rules:
        c = by_class.setdefault(r.cls, {"counts": {v.value: 0 for v in Verdict}, "must_evaluated": 0, "must_passed": 0})
        c["counts"][r.verdict.value] += 1
        if r.level.startswith("MUST") and r.verdict not in NOT_EVALUATED:
            c["must_evaluated"] += 1
            c["must_passed"] += r.verdict == Verdict.PASS
    return {
        "counts": counts,
        "total": len(report.rules),
        "must_evaluated": len(must),
        "must_passed": sum(1 for r in must if r.verdict == Verdict.PASS),
        "by_class": by_class,
        "exit_code": report.exit_code(),
        # PASS outranks SKIP: rules that passed although some of their checks were skipped or did not
        # observe their decisive state (issue 14).
        "passed_partially": sum(1 for r in report.rules if r.verdict == Verdict.PASS and r.partial),
        "passed_with_skipped_checks": sum(1 for r in report.rules if r.verdict == Verdict.PASS and r.skipped_checks),
        "level": (report.conformance or {}).get("reached", 0),
    }


def report_dict(report: RunReport) -> dict[str, Any]:
    return {
        "schema_version": report.schema_version,
        "tool": {"name": "batchspec", "version": report.tool_version},
        "target": report.target,
        "profile": report.profile,
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "duration_s": report.duration_s,
        "strict": report.strict,
        "classes_declared": report.classes_declared,
        "settings": report.settings,
        "preflight": report.preflight,
        "summary": summary_dict(report),
        "interrupted": getattr(report, "interrupted", None),
        "target_stopped": getattr(report, "target_stopped", None),
        "notes": report.notes,
        "waivers": list(getattr(report, "waivers", []) or []),
        "catalogue": report.catalogue or {"version": ""},
        "conformance": report.conformance or {},
        "rules": [rule_dict(r, (report.settings or {}).get("evidence", "summary")) for r in report.rules],
    }


def render_json(report: RunReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, default=str) + "\n"
