"""Waivers (SPEC §5): a waived FAIL is WAIVED in every report and does not fail the run; an expired
waiver stops waiving and the report says why; a waiver for a passing rule is reported as stale."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import Verdict, _waivers
from conformance._model import CheckOutcome, RuleResult, RunReport
from _two_failures import BROKEN, day, run_two_failures

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "schemas" / "examples" / "waivers"


def waiver(rule: str, expires_in: int = 30, **extra) -> dict:
    return {"rule": rule, "reason": f"known gap in {rule}, ticket T-{rule}", "expires": day(expires_in)} | extra


def test_one_waiver_of_two_failures_still_fails(tmp_path):
    out = tmp_path / "reports"
    report = run_two_failures(tmp_path, [waiver("CORE-07")], out)
    by_id = {r.id: r for r in report.rules}
    assert by_id["CORE-07"].verdict == Verdict.WAIVED
    assert by_id["CORE-08"].verdict == Verdict.FAIL
    assert report.exit_code() == 1
    assert report.counts()["WAIVED"] == 1 and report.counts()["FAIL"] == 1
    reason = "known gap in CORE-07, ticket T-CORE-07"
    # The waiver's reason shows in every report.
    doc = json.loads((out / "report.json").read_text())
    rule = next(r for r in doc["rules"] if r["id"] == "CORE-07")
    assert rule["verdict"] == "WAIVED" and rule["waiver"]["status"] == "active" and reason in rule["reason"]
    assert rule["evidence"], "a WAIVED rule keeps the evidence of its FAIL"
    assert doc["summary"]["exit_code"] == 1
    for name in ("report.md", "report.html", "junit.xml", "summary.md"):
        assert reason in (out / name).read_text(), name
    case = next(c for c in ET.parse(out / "junit.xml").iter("testcase") if c.get("name", "").startswith("CORE-07"))
    assert case.find("skipped") is not None and "WAIVED" in case.find("skipped").get("message")


def test_both_failures_waived_pass(tmp_path):
    out = tmp_path / "reports"
    report = run_two_failures(tmp_path, [waiver(r) for r in BROKEN], out)
    assert {r.id: r.verdict for r in report.rules if r.id in BROKEN} == {r: Verdict.WAIVED for r in BROKEN}
    assert report.exit_code() == 0
    root = ET.parse(out / "junit.xml").getroot()
    assert root.get("failures") == "0" and root.get("errors") == "0"


def test_expired_waiver_no_longer_waives(tmp_path):
    out = tmp_path / "reports"
    report = run_two_failures(tmp_path, [waiver("CORE-07", expires_in=-1), waiver("CORE-08")], out)
    by_id = {r.id: r for r in report.rules}
    assert by_id["CORE-07"].verdict == Verdict.FAIL
    assert by_id["CORE-08"].verdict == Verdict.WAIVED
    assert report.exit_code() == 1
    assert "expired" in by_id["CORE-07"].reason and day(-1) in by_id["CORE-07"].reason
    assert any("CORE-07" in n and "expired" in n for n in report.notes)
    doc = json.loads((out / "report.json").read_text())
    assert next(w for w in doc["waivers"] if w["rule"] == "CORE-07")["status"] == "expired"
    md = (out / "report.md").read_text()
    assert f"Waiver for CORE-07 expired on {day(-1)}" in md


def test_waiver_expiring_today_still_waives(tmp_path):
    report = run_two_failures(tmp_path, [waiver("CORE-07", expires_in=0)])
    assert {r.id: r.verdict for r in report.rules}["CORE-07"] == Verdict.WAIVED


def test_waiver_for_another_target_does_not_apply(tmp_path):
    report = run_two_failures(tmp_path, [waiver("CORE-07", target="https://prod.example.com/*")])
    by_id = {r.id: r for r in report.rules}
    assert by_id["CORE-07"].verdict == Verdict.FAIL
    assert report.waivers[0]["status"] == "unused" and "does not match" in report.waivers[0]["detail"]


def test_waiver_for_this_target_applies(tmp_path):
    report = run_two_failures(tmp_path, [waiver("CORE-07", target="http://reference.test*")])
    assert {r.id: r.verdict for r in report.rules}["CORE-07"] == Verdict.WAIVED


# -- apply() on synthetic reports: what a waiver never does --------------------

def _report(verdicts: dict[str, Verdict]) -> RunReport:
    rules = [RuleResult(id=rid, cls=rid.split("-")[0], level="MUST", title="t", rationale="", seed="",
                        verdict=v, reason=f"{v.value} reason",
                        checks=[CheckOutcome(nodeid=f"x::{rid}", name=f"test_{rid}", rule_id=rid, verdict=v)])
             for rid, v in verdicts.items()]
    return RunReport(schema_version="1.0", tool_version="t", target="http://t.test", profile="p",
                     started_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:00:01+00:00",
                     duration_s=1, strict=False, classes_declared=["CORE"], rules=rules)


@pytest.mark.parametrize("verdict", [Verdict.ERROR, Verdict.WARN, Verdict.INFO, Verdict.SKIP, Verdict.PENDING])
def test_waiver_only_accepts_a_fail(verdict):
    report = _report({"CORE-01": verdict})
    _waivers.apply(report, [waiver("CORE-01")])
    assert report.rules[0].verdict == verdict
    assert report.waivers[0]["status"] == "unused" and report.waivers[0]["detail"]
    assert report.exit_code() == (1 if verdict == Verdict.ERROR else 0)


def test_stale_waiver_is_noted():
    report = _report({"CORE-01": Verdict.PASS})
    _waivers.apply(report, [waiver("CORE-01")])
    assert report.rules[0].verdict == Verdict.PASS
    assert report.waivers[0]["status"] == "stale"
    assert any("stale" in n and "CORE-01" in n for n in report.notes)


def test_first_active_waiver_wins():
    report = _report({"CORE-01": Verdict.FAIL})
    _waivers.apply(report, [waiver("CORE-01"), waiver("CORE-01", expires_in=-3)])
    assert report.rules[0].verdict == Verdict.WAIVED
    assert [w["status"] for w in report.waivers] == ["active", "unused"]


# -- the waivers file ----------------------------------------------------------

@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")), ids=lambda p: p.stem)
def test_valid_examples_load(path):
    assert isinstance(_waivers.load(path), list)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.json")), ids=lambda p: p.stem)
def test_invalid_examples_are_rejected(path):
    with pytest.raises(_waivers.WaiverError):
        _waivers.load(path)


def test_yaml_file_with_dates_and_lowercase_ids(tmp_path):
    f = tmp_path / "w.yaml"
    f.write_text("waivers:\n  - rule: core-07\n    reason: gap\n    expires: 2031-01-31\n")
    assert _waivers.load(f) == [{"rule": "CORE-07", "reason": "gap", "expires": "2031-01-31", "target": None}]


@pytest.mark.parametrize("text, message", [
    ("- rule: CORE-99\n  reason: x\n  expires: 2031-01-01\n", "unknown rule 'CORE-99'"),
    ("- rule: CORE-07\n  reason: x\n  expires: soon\n", "expires must be a date"),
    ("- rule: CORE-07\n  expires: 2031-01-01\n", "'reason' is required"),
    ("rule: [\n", "not valid YAML"),
])
def test_bad_waivers_file_messages(tmp_path, text, message):
    f = tmp_path / "w.yaml"
    f.write_text(text)
    with pytest.raises(_waivers.WaiverError, match=message):
        _waivers.load(f)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240)


def test_cli_bad_waivers_file_is_a_usage_error(tmp_path):
    res = _cli("run", "--waivers", str(tmp_path / "missing.yaml"), "--rule", "CORE-01", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no such waivers file" in res.stderr


def test_cli_waiver_for_passing_rule_is_stale(tmp_path):
    f = tmp_path / "waivers.yaml"
    f.write_text(f"- rule: CORE-01\n  reason: was broken in 4.1\n  expires: {day(30)}\n")
    res = _cli("run", "--rule", "CORE-01", "--waivers", str(f), "--report-dir", str(tmp_path / "r"), "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "stale" in res.stdout and "CORE-01" in res.stdout
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["waivers"][0]["status"] == "stale"
    assert any("stale" in n for n in doc["notes"])
    assert "stale" in (tmp_path / "r" / "report.md").read_text()
