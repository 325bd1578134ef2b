"""The four reports of a run against a target with two failing rules: junit.xml is well-formed with one
testcase per rule, report.json validates against its schema, report.md shows each FAIL with its rule
text, expected, seen, exchanges and a curl replay, and report.html renders in a real headless Chromium
(summary, a failing rule's evidence one click from the top, no console error, no network fetch)."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import Verdict, load_catalogue
from conformance._model import CheckOutcome, Exchange, RuleResult, RunReport
from conformance._schemas import errors as schema_errors
from conformance.reports import render_html, render_junit, render_markdown
from _chromium import chromium_path
from _two_failures import BROKEN, run_two_failures

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("two-failures")
    out = tmp / "reports"
    report = run_two_failures(tmp, None, out)
    assert {r.id for r in report.rules if r.verdict == Verdict.FAIL} == set(BROKEN)
    return out


def test_every_report_is_written(reports):
    assert {p.name for p in reports.iterdir()} >= {"junit.xml", "report.json", "report.md", "report.html", "summary.md"}


def test_junit_is_well_formed_with_one_testcase_per_rule(reports):
    root = ET.parse(reports / "junit.xml").getroot()
    cases = list(root.iter("testcase"))
    ids = [c.get("name").split(" ", 1)[0] for c in cases]
    assert sorted(ids) == sorted(r.id for r in load_catalogue().rules)
    assert root.get("tests") == str(len(cases))
    failed = sorted(c.get("name").split(" ", 1)[0] for c in cases if c.find("failure") is not None)
    assert failed == sorted(BROKEN)
    assert root.get("failures") == "2"
    assert sum(int(s.get("tests")) for s in root.iter("testsuite")) == len(cases)
    failure = next(c for c in cases if c.get("name").startswith("CORE-07")).find("failure")
    assert "curl" in failure.text and "expected:" in failure.text


def test_report_json_validates_and_carries_the_contract(reports):
    doc = json.loads((reports / "report.json").read_text())
    assert schema_errors("report.schema.json", doc) == []
    assert doc["schema_version"].startswith("1.")
    assert [r["id"] for r in doc["rules"]] == [r.id for r in load_catalogue().rules]
    assert doc["summary"]["counts"]["FAIL"] == 2 and doc["summary"]["exit_code"] == 1
    fail = next(r for r in doc["rules"] if r["id"] == "CORE-07")
    assert fail["evidence"] and all(e["curl"].startswith("curl ") for e in fail["evidence"])
    assert fail["expected"] and fail["seen"]


def test_report_md_shows_each_fail_with_its_evidence(reports):
    md = (reports / "report.md").read_text()
    cat = load_catalogue()
    for rid in BROKEN:
        section = md.split(f"### {rid} — FAIL", 1)[1].split("\n### ", 1)[0]
        assert cat.get(rid).title in section
        assert "- expected: " in section and "- seen: " in section
        assert "**Exchange 1:** `POST " in section
        assert "Request body:" in section and "Response 200" in section
        assert re.search(r"```sh\ncurl -sS -X POST ", section)
    assert "MUST compliance" in md


def test_secrets_stay_out_of_every_report(reports):
    # every file, the request bodies a curl line points to (reports/bodies/) included
    for p in (p for p in reports.rglob("*") if p.is_file()):
        text = p.read_text(errors="replace")
        assert "Bearer " not in text or "Bearer <redacted>" in text, p.name


def test_html_is_self_contained(reports):
    page = (reports / "report.html").read_text()
    # Nothing that would make the browser fetch: no external src/href, stylesheet link, @import or url().
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", page, re.I)
    assert "<link rel='stylesheet'" not in page and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy" in page


# -- synthetic reports: hostile evidence ---------------------------------------

def _hostile_report() -> RunReport:
    ex = Exchange(method="POST", url="http://t.test/batch", request_headers={"Content-Type": "application/json"},
                  request_body='{"operations": ["\x00\x1b</script><script>alert(1)</script>", "x"]}', status=500,
                  response_headers={"content-type": "text/html"}, response_body="<img src=http://evil.test/x>\x07",
                  curl="curl -sS -X POST http://t.test/batch --data-binary '\x00'")
    # Valid JSON that decodes to a lone surrogate, and nesting deeper than json's recursion limit.
    lone = Exchange(method="POST", url="http://t.test/batch", request_headers={}, request_body='["\\ud800"]',
                    status=400, response_body='{"error": "bad \\udfff"}', curl="curl")
    deep = Exchange(method="POST", url="http://t.test/batch", request_headers={},
                    request_body="[" * 100_000 + "]" * 100_000, status=500, curl="curl")
    check = CheckOutcome(nodeid="s::test_x", name="test_x", rule_id="ROB-02", verdict=Verdict.FAIL,
                         reason="got 500 for <script>", expected="4xx", seen="500 \x01", evidence=[ex, lone, deep])
    rule = RuleResult(id="ROB-02", cls="ROB", level="MUST", title="hostile inputs get a 4xx", rationale="r",
                      seed="s", verdict=Verdict.FAIL, reason="got 500 for <script>", checks=[check])
    return RunReport(schema_version="1.0", tool_version="t", target="http://t.test", profile="p",
                     started_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:00:01+00:00", duration_s=1,
                     strict=False, classes_declared=["CORE", "ROB"], rules=[rule])


def test_every_report_is_written_despite_hostile_evidence(tmp_path):
    from conformance.reports import write_all

    written = write_all(_hostile_report(), tmp_path)
    ET.parse(written["junit.xml"])
    assert json.loads(written["report.json"].read_text())["rules"][0]["verdict"] == "FAIL"
    assert "alert(1)" in written["report.html"].read_text()


def test_junit_survives_control_characters():
    root = ET.fromstring(render_junit(_hostile_report()).encode())
    assert root.find(".//failure") is not None


def test_html_escapes_hostile_evidence():
    page = render_html(_hostile_report())
    assert "<script>alert(1)" not in page and "<img src=http://evil.test" not in page
    assert page.count("<script>") == 1  # only the report's own script
    assert "got 500 for &lt;script&gt;" in page
    assert "```" in render_markdown(_hostile_report())


# -- a real browser ------------------------------------------------------------

def _browser_or_skip():
    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the report.html browser test needs it")
    pytest.importorskip("websocket", reason="websocket-client (the `test` extra) drives Chromium over DevTools")
    from _chromium import Browser

    return Browser()


def test_html_renders_in_chromium(reports):
    with _browser_or_skip() as b:
        b.open(reports / "report.html")
        text = b.eval("document.body.innerText")
        assert "MUST compliance" in text and "http://reference.test" in text
        assert b.eval("document.querySelectorAll('#classes tr').length") >= 3
        assert b.eval("document.querySelectorAll('details.rule').length") == len(load_catalogue().rules)
        # Click 1: the finding at the top opens the failing rule with its evidence in view.
        b.click("ul.findings a[href='#CORE-07']")
        b.eval("new Promise(r => setTimeout(r, 50))")
        assert b.eval("document.getElementById('CORE-07').open") is True
        evidence = b.eval("document.getElementById('CORE-07').innerText")
        for needle in ("expected", "seen", "Exchange 1", "POST http://reference.test", "Replay with curl", "curl -sS"):
            assert needle in evidence, needle
        assert b.eval("(() => { const r = document.querySelector('#CORE-07 .ex').getBoundingClientRect();"
                      " return r.top < innerHeight && r.bottom > 0; })()"), "the evidence is not scrolled into view"
        # Filters: only FAILs, then only class HTTP.
        b.click("a[data-only='FAIL']")
        shown = b.eval("[...document.querySelectorAll('details.rule')].filter(d => d.offsetParent).map(d => d.id)")
        assert sorted(shown) == sorted(BROKEN)
        b.eval("const s = document.getElementById('cls'); s.value = 'HTTP'; s.dispatchEvent(new Event('change'))")
        assert b.eval("[...document.querySelectorAll('details.rule')].filter(d => d.offsetParent).length") == 0
        b.click("#reset")
        (ROOT / "build").mkdir(exist_ok=True)
        b.eval("scrollTo(0, 0)")  # the first screen: what a reviewer sees on opening the page
        b.screenshot(ROOT / "build" / "report-html.png")
        # A failing run's headline figure is red; the level is shown beside it.
        assert b.eval("getComputedStyle(document.getElementById('headline')).color") == "rgb(198, 40, 40)"
        assert b.eval("document.getElementById('level').innerText").startswith("Level 0/4")
        # A link straight to a rule by its id opens it.
        b.open(reports / "report.html", fragment="CORE-08")
        assert b.eval("document.getElementById('CORE-08').open") is True
        assert not b.console_errors, b.console_errors
        assert not b.exceptions, b.exceptions
        assert all(u.startswith("file:") for u in b.requests), f"report.html fetched: {b.requests}"
