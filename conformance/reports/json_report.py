"""report.json: the public, versioned contract (schemas/report.schema.json, docs/report-format.md)."""
from __future__ import annotations

import json
from typing import Any

from .._model import RuleResult, RunReport, Verdict

# Evidence kept per rule: enough to audit and replay, bounded so a fuzzing run stays a readable file.
MAX_EVIDENCE = {"PASS": 20, "default": 100}
NOT_EVALUATED = (Verdict.SKIP, Verdict.PENDING)


def deciding_checks(r: RuleResult) -> list:
    # For a WAIVED rule the deciding checks are the ones that FAILed.
    decided = Verdict.FAIL if r.verdict == Verdict.WAIVED else r.verdict
    return [c for c in r.checks if c.verdict == decided] or r.checks


def _evidence(r: RuleResult) -> tuple[list[dict[str, Any]], int]:
    if r.verdict in NOT_EVALUATED:
        return [], 0
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


def rule_dict(r: RuleResult) -> dict[str, Any]:
    d = deciding(r)
    evidence, omitted = _evidence(r)
    return {
        "id": r.id,
        "class": r.cls,
        "level": r.level,
        "title": r.title,
        "rationale": r.rationale,
        "seed": r.seed,
        "verdict": r.verdict.value,
        "reason": r.reason,
        "expected": None if d is None or d.expected is None else str(d.expected),
        "seen": None if d is None or d.seen is None else str(d.seen),
        "checks": [c.to_dict() | {"requirement": c.requirement} for c in r.checks],
        "evidence": evidence,
        "evidence_omitted": omitted,
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
        "notes": report.notes,
        "waivers": list(getattr(report, "waivers", []) or []),
        "rules": [rule_dict(r) for r in report.rules],
    }


def render_json(report: RunReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, default=str) + "\n"
