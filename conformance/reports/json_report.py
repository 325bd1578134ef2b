"""report.json: the public, versioned contract (schemas/report.schema.json)."""
from __future__ import annotations

import json
from typing import Any

from .._model import RunReport


def rule_dict(r) -> dict[str, Any]:
    deciding = r.deciding_check
    return {
        "id": r.id,
        "class": r.cls,
        "level": r.level,
        "title": r.title,
        "rationale": r.rationale,
        "seed": r.seed,
        "verdict": r.verdict.value,
        "reason": r.reason,
        "expected": deciding.expected if deciding else None,
        "seen": deciding.seen if deciding else None,
        "checks": [c.to_dict() for c in r.checks],
        "evidence": [e.to_dict() for e in r.evidence] if r.verdict.value not in ("SKIP", "PENDING") else [],
        "waiver": r.waiver,
    }


def report_dict(report: RunReport) -> dict[str, Any]:
    counts = report.counts()
    must = [r for r in report.rules if r.level.startswith("MUST") and r.verdict.value not in ("SKIP", "PENDING")]
    must_pass = sum(1 for r in must if r.verdict.value == "PASS")
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
        "summary": {
            "counts": counts,
            "total": len(report.rules),
            "must_evaluated": len(must),
            "must_passed": must_pass,
            "exit_code": report.exit_code(),
        },
        "notes": report.notes,
        "rules": [rule_dict(r) for r in report.rules],
    }


def render_json(report: RunReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, default=str) + "\n"
