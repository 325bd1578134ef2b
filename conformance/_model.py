"""The one result model every front end and reporter shares."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    INFO = "INFO"
    SKIP = "SKIP"
    ERROR = "ERROR"
    PENDING = "PENDING"
    WAIVED = "WAIVED"

    def __str__(self) -> str:
        return self.value


# Worst first: a rule's verdict is the worst of its checks' verdicts.
SEVERITY: dict[Verdict, int] = {
    Verdict.FAIL: 0,
    Verdict.ERROR: 1,
    Verdict.WARN: 2,
    Verdict.INFO: 3,
    Verdict.PASS: 4,
    Verdict.SKIP: 5,
    Verdict.PENDING: 6,
    Verdict.WAIVED: 7,
}


def worst(verdicts: list[Verdict]) -> Verdict:
    return min(verdicts, key=SEVERITY.__getitem__)


@dataclass
class Exchange:
    """One HTTP request and its response (or the failure to get one), redacted."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str | None
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    elapsed_ms: float | None = None
    error: str | None = None
    curl: str = ""
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": {
                "method": self.method,
                "url": self.url,
                "headers": self.request_headers,
                "body": self.request_body,
            },
            "response": None
            if self.status is None
            else {
                "status": self.status,
                "headers": self.response_headers,
                "body": self.response_body,
            },
            "elapsed_ms": self.elapsed_ms,
            "error": self.error,
            "curl": self.curl,
            "note": self.note,
        }


@dataclass
class CheckOutcome:
    """What one check (a pytest test) found."""

    nodeid: str
    name: str
    rule_id: str
    verdict: Verdict
    reason: str = ""
    expected: str | None = None
    seen: str | None = None
    requirement: str = ""
    duration_s: float = 0.0
    evidence: list[Exchange] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    observed: list[str] = field(default_factory=list)
    """What the check did not observe (conformance.checks.observed): a PASS holds for the rest only."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "observed": self.observed,
            "name": self.name,
            "nodeid": self.nodeid,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "expected": self.expected,
            "seen": self.seen,
            "duration_s": round(self.duration_s, 4),
            "figures": self.figures,
        }


@dataclass
class RuleResult:
    id: str
    cls: str
    level: str
    title: str
    rationale: str
    seed: str
    verdict: Verdict
    reason: str = ""
    checks: list[CheckOutcome] = field(default_factory=list)
    waiver: dict[str, Any] | None = None

    @property
    def evidence(self) -> list[Exchange]:
        """The exchanges of the checks that decided the verdict (all of them for a PASS)."""
        deciding = [c for c in self.checks if c.verdict == self.verdict] or self.checks
        out: list[Exchange] = []
        for c in deciding:
            out.extend(c.evidence)
        return out

    @property
    def deciding_check(self) -> CheckOutcome | None:
        for c in self.checks:
            if c.verdict == self.verdict:
                return c
        return None


@dataclass
class RunReport:
    schema_version: str
    tool_version: str
    target: str
    profile: str
    started_at: str
    finished_at: str
    duration_s: float
    strict: bool
    classes_declared: list[str]
    rules: list[RuleResult]
    preflight: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    waivers: list[dict[str, Any]] = field(default_factory=list)  # every waiver with its status (_waivers.apply)
    # A run ended by SIGINT/SIGTERM: {"signal", "checks_run", "checks_total", "message"}; None if it finished.
    interrupted: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for r in self.rules:
            out[r.verdict.value] += 1
        return out

    def exit_code(self) -> int:
        """SPEC §5: 0 every MUST passed (and every SHOULD under --strict), 1 otherwise, 3 preflight,
        130 interrupted by SIGINT (143 by SIGTERM)."""
        if self.interrupted:
            return 143 if self.interrupted.get("signal") == "SIGTERM" else 130
        if self.preflight and not self.preflight.get("ok", True):
            return 3
        for r in self.rules:
            if r.verdict in (Verdict.FAIL, Verdict.ERROR):
                return 1
        return 0
