"""The one result model every front end and reporter shares."""
from __future__ import annotations

import enum
import time
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
    # When the exchange was recorded (epoch seconds, just after the response): HAR's startedDateTime.
    recorded_at: float = field(default_factory=time.time)

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
    # Measured series for charts (checks.series): [{"name", "x", "y", "unit", "kind", "points": [[x, y], ...]}].
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodeid": self.nodeid,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "expected": self.expected,
            "seen": self.seen,
            "duration_s": round(self.duration_s, 4),
            "figures": self.figures,
            "observed": list(self.observed),
            "series": list(self.series),
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
    def skipped_checks(self) -> list[CheckOutcome]:
        """Checks that were skipped while the rule still got a verdict from the others (issue 14)."""
        if self.verdict in (Verdict.SKIP, Verdict.PENDING) or not self.checks:
            return []
        return [c for c in self.checks if c.verdict == Verdict.SKIP]

    @property
    def not_observed(self) -> list[str]:
        """What the rule's checks said they could not observe (checks.observed), deduplicated."""
        return list(dict.fromkeys(n for c in self.checks for n in c.observed))

    @property
    def partial(self) -> bool:
        """True when the verdict rests on less than every check observing its decisive state."""
        return bool(self.skipped_checks or self.not_observed)

    def qualifier(self) -> str:
        """What a bare verdict hides: "2 of 3 checks; 1 skipped: the target upserts; not observed: ..."."""
        parts = []
        skipped = self.skipped_checks
        if skipped:
            ran = len(self.checks) - len(skipped)
            why = "; ".join(dict.fromkeys(c.reason or c.name for c in skipped))
            parts.append(f"{ran} of {len(self.checks)} checks; {len(skipped)} skipped: {why}")
        notes = self.not_observed
        if notes:
            parts.append("not observed: " + "; ".join(notes))
        return "; ".join(parts)

    def label(self) -> str:
        """The verdict as every format shows it: "PASS (2 of 3 checks; 1 skipped: ...)"."""
        q = self.qualifier()
        return f"{self.verdict.value} ({q})" if q else self.verdict.value

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
    # SPEC 4b: the highest level reached and what blocks the next (_levels.assess).
    conformance: dict[str, Any] = field(default_factory=dict)
    catalogue: dict[str, Any] = field(default_factory=dict)  # {"version": ...} of the catalogue judged against
    # A run ended by SIGINT/SIGTERM: {"signal", "checks_run", "checks_total", "message"}; None if it finished.
    interrupted: dict[str, Any] | None = None
    # The target stopped answering during the run (conformance._down): {"after", "error", "check", "rule",
    # "checks_not_run", "message"}; None while it answered throughout.
    target_stopped: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for r in self.rules:
            out[r.verdict.value] += 1
        return out

    def exit_code(self) -> int:
        """SPEC §5: 0 every MUST passed (and every SHOULD under --strict), 1 otherwise, 3 preflight
        or a target that stopped answering without a rule failing, 130 interrupted by SIGINT (143 by SIGTERM)."""
        if self.interrupted:
            return 143 if self.interrupted.get("signal") == "SIGTERM" else 130
        if self.preflight and not self.preflight.get("ok", True):
            return 3
        if any(r.verdict == Verdict.FAIL for r in self.rules):
            return 1
        if self.target_stopped:
            return 3  # no rule failed: the target became unusable during the run
        for r in self.rules:
            if r.verdict == Verdict.ERROR:
                return 1
        return 0
