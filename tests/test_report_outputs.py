"""The embedded default run (`batchspec run`, no target) through the CLI, as a CI pipeline would use it:
report.json stays small (passing checks' evidence summarised, at most 200 KB), exchanges.har holds every
exchange as HAR 1.2 with secrets redacted, badge.svg states the level, `--fail-under LEVEL` gates on
the conformance level, and report.html renders in headless Chromium without any network request."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import _catalogue
from conformance._model import CheckOutcome, Exchange, RuleResult, RunReport, Verdict
from conformance._schemas import errors as schema_errors
from conformance.cli import main
from conformance.reports import render_badge, render_har, render_json
from conformance.reports.badge import render_badge_for

ROOT = Path(__file__).resolve().parent.parent
MAX_REPORT_JSON = 200_000


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The whole default run once (about 20 s): every class the bundled profile declares."""
    out = tmp_path_factory.mktemp("default") / "reports"
    assert main(["run", "-q", "--report-dir", str(out), "--fail-under", "3"]) == 0
    return out


def test_default_run_report_json_is_small_and_valid(default_run):
    path = default_run / "report.json"
    doc = json.loads(path.read_text())
    assert schema_errors("report.schema.json", doc) == []
    assert path.stat().st_size <= MAX_REPORT_JSON, path.stat().st_size
    assert doc["settings"]["evidence"] == "summary"
    passed = [r for r in doc["rules"] if r["verdict"] == "PASS"]
    assert passed and all(r["evidence"] == [] and r["evidence_summary"]["exchanges"] == r["evidence_omitted"]
                          for r in passed)
    assert sum(r["evidence_summary"]["exchanges"] for r in passed) > 100
    assert doc["conformance"]["reached"] == 3
    assert doc["conformance"]["next"]["blockers"][0]["class"] == "FLEET"


def _har_ok(har: dict) -> list[dict]:
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "batchspec"
    for e in log["entries"]:
        assert {"startedDateTime", "time", "request", "response", "cache", "timings"} <= set(e)
        assert {"method", "url", "httpVersion", "cookies", "headers", "queryString", "headersSize",
                "bodySize"} <= set(e["request"])
        assert {"status", "statusText", "httpVersion", "cookies", "headers", "content", "redirectURL",
                "headersSize", "bodySize"} <= set(e["response"])
        assert {"size", "mimeType"} <= set(e["response"]["content"])
        assert e["timings"]["wait"] >= 0 and e["startedDateTime"].endswith("Z")
    return log["entries"]


def test_har_holds_every_exchange_of_the_run(default_run):
    entries = _har_ok(json.loads((default_run / "exchanges.har").read_text()))
    doc = json.loads((default_run / "report.json").read_text())
    recorded = sum((r.get("evidence_summary") or {}).get("exchanges", 0) for r in doc["rules"])
    assert len(entries) == recorded + len(doc["preflight"]["evidence"])
    assert entries[0]["comment"].startswith("preflight")
    assert [e["startedDateTime"] for e in entries] == sorted(e["startedDateTime"] for e in entries)
    assert any(e["comment"].startswith("IDEM-01 ") for e in entries)


def test_badge_states_the_level_and_the_date(default_run):
    svg = (default_run / "badge.svg").read_text()
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    doc = json.loads((default_run / "report.json").read_text())
    assert f"level 3/4 · {doc['finished_at'][:10]}" in svg
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched


def test_badge_for_no_level():
    svg = render_badge_for(0, 4, "none", "2030-01-02")
    assert "no level · 2030-01-02" in svg and "#c62828" in svg


@pytest.mark.parametrize("args,code", [
    (["--class", "CORE,HTTP,SIZE", "--fail-under", "1"], 0),
    (["--class", "CORE,HTTP,SIZE", "--fail-under", "safe retries"], 1),  # PART, IDEM not run
])
def test_fail_under_gates_on_the_level(args, code, tmp_path, capsys):
    assert main(["run", "-q", "--report-dir", str(tmp_path), *args]) == code
    out = capsys.readouterr().out
    assert "conformance level 1 reached" in out


@pytest.mark.parametrize("args", [["--fail-under", "9"], ["--baseline", "/nonexistent/old.json"]])
def test_bad_fail_under_or_baseline_is_a_usage_error(args, tmp_path, capsys):
    assert main(["run", "http://127.0.0.1:9", "--report-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("batchspec: ")


def _report(evidence: str) -> RunReport:
    ex = Exchange(method="POST", url="http://t.test/batch?x=1", request_headers={"Authorization": "<redacted>"},
                  request_body='{"items": []}', status=200, response_headers={"content-type": "application/json"},
                  response_body='{"results": []}', elapsed_ms=3.5, curl="curl -sS")
    check = CheckOutcome(nodeid="s::t", name="t", rule_id="CORE-01", verdict=Verdict.PASS, evidence=[ex, ex])
    rule = RuleResult(id="CORE-01", cls="CORE", level="MUST", title="t", rationale="r", seed="s",
                      verdict=Verdict.PASS, reason="1 check(s) passed", checks=[check])
    return RunReport(schema_version="1.1", tool_version="t", target="http://t.test", profile="p",
                     started_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:00:01+00:00", duration_s=1,
                     strict=False, classes_declared=["CORE"], rules=[rule], settings={"evidence": evidence})


def test_evidence_all_keeps_passing_exchanges():
    summary = json.loads(render_json(_report("summary")))["rules"][0]
    full = json.loads(render_json(_report("all")))["rules"][0]
    assert summary["evidence"] == [] and summary["evidence_omitted"] == 2
    assert summary["evidence_summary"] == {"exchanges": 2, "requests": {"POST /batch": 2}, "statuses": {"200": 2},
                                           "elapsed_ms": 7.0}
    assert len(full["evidence"]) == 2 and full["evidence_omitted"] == 0


def test_har_of_a_synthetic_report():
    entries = _har_ok(json.loads(render_har(_report("summary"))))
    assert len(entries) == 2
    e = entries[0]
    assert e["request"]["queryString"] == [{"name": "x", "value": "1"}]
    assert e["request"]["postData"]["text"] == '{"items": []}'
    assert e["response"]["content"]["mimeType"] == "application/json" and e["time"] == 3.5


@pytest.mark.parametrize("body", ['{"results": []}', "caf\u00e9 \u2028 \x00\x1f \\ \" \U0001f600", "lone \ud800 surrogate"])
def test_har_is_what_json_writes(body):
    # orjson writes the HAR; json is the reference (and the fallback for what orjson refuses).
    from conformance.reports.har import har_dict

    report = _report("summary")
    report.rules[0].checks[0].evidence[0].response_body = body
    text = render_har(report)
    assert text.endswith("\n")
    expected = json.dumps(har_dict(report), ensure_ascii=False, default=str)
    if "\ud800" in body:
        assert text == expected + "\n"  # json's output, which write_all escapes when it writes the file
    else:
        assert json.loads(text) == json.loads(expected)


def test_secrets_stay_out_of_har_and_badge(tmp_path):
    from conformance.reports import write_all

    report = _report("all")
    report.rules[0].checks[0].evidence[0].request_headers["X-Api-Key"] = "s3cr3t-value"
    written = write_all(report, tmp_path, secrets=["s3cr3t-value"])
    assert "s3cr3t-value" not in written["exchanges.har"].read_text()
    assert render_badge(report)


# -- report.html of the default run in a real headless Chromium ---------------------------------

def _browser_or_skip():
    from _chromium import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the report.html browser test needs it")
    pytest.importorskip("websocket", reason="websocket-client (the `test` extra) drives Chromium over DevTools")
    return Browser()


def _visible(b) -> list[str]:
    return b.eval("[...document.querySelectorAll('details.rule')].filter(d => d.offsetParent).map(d => d.id)")


def _search(b, text: str) -> None:
    b.eval(f"(() => {{ const q = document.getElementById('q'); q.value = {json.dumps(text)};"
           " q.dispatchEvent(new Event('input')); })()")


def test_default_report_html_in_chromium(default_run):
    with _browser_or_skip() as b:
        b.open(default_run / "report.html")
        (ROOT / "build").mkdir(exist_ok=True)
        b.screenshot(ROOT / "build" / "report-html-default.png")  # the first screen, kept as a CI artifact
        assert b.eval("document.getElementById('level').innerText").startswith("Level 3/4")
        assert "Large and transactional" in b.eval("document.getElementById('level-headline').innerText")
        assert b.eval("getComputedStyle(document.getElementById('headline')).color") == "rgb(46, 125, 50)"
        # The text search filters the rules (all words must occur), together with the verdict filters.
        total = len(_visible(b))
        assert total == len(_catalogue.load().rules)
        _search(b, "idempotency-key")
        some = _visible(b)
        assert 0 < len(some) < total and all(i.startswith(("IDEM", "FLEET", "ASYNC", "PART")) for i in some), some
        _search(b, "PERF-01 batch")
        assert _visible(b) == ["PERF-01"]
        assert "1 of" in b.eval("document.getElementById('shown').innerText")
        b.click("#reset")
        assert len(_visible(b)) == total and b.eval("document.getElementById('q').value") == ""
        # Charts are inline SVG drawn by the kit: PERF-01's costs and an async job's progress.
        assert b.eval("document.querySelectorAll('#measurements + .measures svg.chart').length") >= 1
        assert b.eval("document.querySelectorAll('#PERF-01 svg.chart').length") == 1
        assert b.eval("document.querySelectorAll('#ASYNC-05 svg.chart').length") >= 1
        # Code spans in titles are rendered as code, never as backticks.
        titles = b.eval("[...document.querySelectorAll('details.rule .title')].map(t => t.innerText).join(' ')")
        assert "`" not in titles
        assert b.eval("document.querySelectorAll('details.rule .title code').length") > 0
        assert not b.console_errors, b.console_errors
        assert not b.exceptions, b.exceptions
        assert all(u.startswith("file:") for u in b.requests), f"report.html fetched: {b.requests}"


def test_copy_button_copies_the_curl_line(tmp_path):
    from _two_failures import run_two_failures

    out = tmp_path / "reports"
    run_two_failures(tmp_path, None, out)
    with _browser_or_skip() as b:
        b.open(out / "report.html", fragment="CORE-07")
        b.click("#CORE-07 button.copy")
        b.eval("new Promise(r => setTimeout(r, 100))")
        copied = b.eval("document.querySelector('#CORE-07 button.copy').dataset.copied || ''")
        assert copied.startswith("curl -sS -X POST ")
        assert copied == b.eval("document.querySelector('#CORE-07 pre.curl').textContent")
        assert not b.exceptions, b.exceptions


def test_charts_are_inline_svg_made_by_the_kit():
    from conformance.reports._svg import chart

    line = chart({"name": "progress <b>", "x": "s", "y": "items", "unit": "", "kind": "line",
                  "points": [[0, 0], [0.5, 40], [1.2, 100]]})
    root = ET.fromstring(line)
    assert root.tag.endswith("svg") and "progress &lt;b&gt;" in line
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 3
    one = chart({"name": "p", "x": "s", "y": "n", "kind": "line", "points": [[0, 9]]})
    assert "one reading only" in one
    bar = chart({"name": "cost", "x": "", "y": "ms", "unit": "ms", "kind": "bar",
                 "points": [["single", 5.0], ["in a batch", 0.1]]})
    assert len(ET.fromstring(bar).findall(".//{http://www.w3.org/2000/svg}rect")) == 2 and "0.1 ms" in bar
    assert chart({"name": "bad", "kind": "line", "points": [["x", "y"]]}) == ""
    assert chart({"name": "bad", "kind": "bar", "points": [["x", "not a number"]]}) == ""


def test_baseline_shows_what_changed(tmp_path):
    from test_matrix import _write

    from conformance.reports.html import render_html_dict

    old = _write(tmp_path / "old.json", "https://a.example", {})
    new = json.loads(Path(_write(tmp_path / "new.json", "https://a.example", {"IDEM-01": Verdict.FAIL})).read_text())
    new["settings"] = {"baseline": old}
    page = render_html_dict(new)
    section = page.split("id='changes'", 1)[1].split("<h3", 1)[0]
    assert "1 regressed, 0 improved" in section and "level 4 → 1" in section
    assert "href='#IDEM-01'" in section and "regressed" in section
    new["settings"] = {"baseline": str(tmp_path / "missing.json")}
    assert "no such file" in render_html_dict(new)


def test_evidence_summary_groups_requests_by_route():
    from conformance.reports.json_report import _route

    assert _route("http://t/orders/bs-261129214731-395477-73-1-e4e5") == "/orders/{id}"
    assert _route("http://t/v1/imports/batch/3f2a9c1e-aaaa-bbbb/results?cursor=2") == "/v1/imports/batch/{id}/results"
    assert _route("http://t/orders/batch") == "/orders/batch"
