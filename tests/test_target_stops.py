"""A target that stops answering in the middle of a run (issue 13, "verdicts found wrong on real
targets"): what was found before stands, the request that took the target down is a FAIL of the rule
whose check sent it, the run says once after which request the target stopped answering, and only
the checks after it are ERROR. The targets are real processes on loopback (tests/thirdparty/dying_target.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conformance.cli import main

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "thirdparty" / "dying_target.py"


@pytest.fixture
def dying(tmp_path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(mode: str) -> str:
        from test_third_party import _wait_until_up, free_port

        port = free_port()
        proc = subprocess.Popen([sys.executable, str(SCRIPT), str(port), str(tmp_path / "ref.db"), mode],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base + "/openapi.json", proc)
        return base

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def _run(base: str, rules: str, out: Path, capsys) -> tuple[int, dict, str]:
    # One check at a time: these tests name the rules that run after the request that kills the
    # target, in collection order (concurrent checks would run before ROB-02, which runs alone).
    code = main(["run", base, "--rule", rules, "--report-dir", str(out), "--concurrency", "1"])
    console = capsys.readouterr()
    return code, json.loads((out / "report.json").read_text()), console.out + console.err


def test_a_request_that_kills_the_target_is_a_finding_and_the_run_says_so_once(dying, tmp_path, capsys):
    base = dying("crash_on_deep_body")
    code, doc, console = _run(base, "HTTP-04,ROB-02,ROB-03,SIZE-01", tmp_path / "r", capsys)
    rules = {r["id"]: r for r in doc["rules"]}
    # Found before the target died: stands as FAIL with its own violation.
    assert rules["HTTP-04"]["verdict"] == "FAIL" and "stopped answering" not in rules["HTTP-04"]["reason"]
    # The request that killed it: a FAIL of the rule whose check sent it, naming the request.
    rob = rules["ROB-02"]
    assert rob["verdict"] == "FAIL", rob
    assert "deep_nesting_item" in rob["reason"]
    assert "stopped answering after this check's request POST /orders/batch (ROB-02 hostile case " \
           "deep_nesting_item; body of " in rob["reason"], rob["reason"]
    # Only the rules after it are ERROR, each with the one reason.
    after = "target stopped answering after POST /orders/batch (ROB-02 hostile case deep_nesting_item"
    for rid in ("ROB-03", "SIZE-01"):
        assert rules[rid]["verdict"] == "ERROR" and rules[rid]["reason"].startswith(after), rules[rid]
    stopped = doc["target_stopped"]
    assert stopped["rule"] == "ROB-02" and stopped["error"] in ("RemoteProtocolError", "ReadError")
    assert stopped["after"].startswith("POST /orders/batch (ROB-02 hostile case deep_nesting_item")
    assert stopped["checks_not_run"] >= 2 and "ROB-02 FAILs for that request" in stopped["message"]
    # Said once in each format, and the exit code is SPEC §5's for a failed rule.
    assert code == 1 and doc["summary"]["exit_code"] == 1
    assert console.count("TARGET STOPPED") == 1 and console.count(stopped["message"]) == 1
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.count(stopped["message"]) == 1
    junit = (tmp_path / "r" / "junit.xml").read_text()
    assert junit.count('type="target_stopped"') == 1
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("id='target-stopped'") == 1
    from conformance._schemas import errors

    assert errors("report.schema.json", doc) == []


def test_a_target_that_goes_away_blames_no_request_and_exits_3(dying, tmp_path, capsys):
    """It answers the preflight and two more requests, then its process exits: the connection is
    refused, no request is to blame, the checks after it are ERROR, and no rule failed: exit 3."""
    base = dying("close_after:3")
    code, doc, console = _run(base, "CORE-01,CORE-02,CORE-03,CORE-04", tmp_path / "r", capsys)
    stopped = doc["target_stopped"]
    assert stopped and stopped["rule"] is None and stopped["check"] is None
    assert "no request is blamed" in stopped["message"]
    verdicts = {r["id"]: r for r in doc["rules"] if r["id"] in ("CORE-01", "CORE-02", "CORE-03", "CORE-04")}
    assert not [r for r in verdicts.values() if r["verdict"] == "FAIL"], verdicts
    errors = [r for r in verdicts.values() if r["verdict"] == "ERROR"]
    assert errors and all(r["reason"].startswith(f"target stopped answering after {stopped['after']}")
                          for r in errors), errors
    assert code == 3 and doc["summary"]["exit_code"] == 3
    assert console.count("TARGET STOPPED") == 1


def test_a_raw_exchange_without_an_answer_is_blamed_only_when_the_target_is_then_down():
    """A raw exchange closed without an answer sends no probe (targets close lying bodies on
    purpose); when a later request finds the target down with no answer since, it is the one blamed,
    and judge() turns the FAIL onto the check that sent it even after that check has ended."""
    import httpx

    from conformance._down import Watch, judge
    from conformance._model import CheckOutcome, Exchange, Verdict

    def dead(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(dead))
    watch = Watch()
    answered = Exchange("POST", "http://127.0.0.1:9/batch", {}, "{}", status=200, note="CORE-01")
    cut = Exchange("POST", "http://127.0.0.1:9/batch", {"Content-Length": "120"}, '{"items": [', note="ROB-02 hostile case half_body")
    watch.answered(answered)
    watch.dropped(cut, "closed without an answer")
    assert watch.down is None  # no probe, no verdict yet
    rob = CheckOutcome(nodeid="test_rob.py::t", name="t", rule_id="ROB-02", verdict=Verdict.PASS, evidence=[cut])
    later = Exchange("POST", "http://127.0.0.1:9/batch", {}, "{}", note="SIZE-01")
    watch.failed(later, httpx.ConnectError("refused"), client, 0.5)
    assert watch.down and watch.killer is cut
    assert watch.down["message"] == "target stopped answering after POST /batch (ROB-02 hostile case half_body; " \
                                    "body of 120 bytes, starting {\"items\": [)"
    size = CheckOutcome(nodeid="test_size.py::t", name="t", rule_id="SIZE-01", verdict=Verdict.ERROR,
                        reason="HTTP failure talking to the target: ConnectError", evidence=[later])
    judge(size, watch, httpx.ConnectError("refused"))
    assert size.verdict == Verdict.ERROR and size.reason == watch.down["message"]
    judge(rob, watch, live=False)
    assert rob.verdict == Verdict.FAIL and "this check's request POST /batch (ROB-02 hostile case half_body" in rob.reason
    assert watch.down["rule"] == "ROB-02"
    # A target that went away with no dropped request since its last answer: nobody is blamed.
    quiet = Watch()
    quiet.answered(answered)
    quiet.failed(later, httpx.ConnectError("refused"), client, 0.5)
    assert quiet.down and quiet.killer is None and quiet.down["after"].startswith("POST /batch (CORE-01")


def test_plain_pytest_says_it_once_too(dying, tmp_path):
    base = dying("crash_on_deep_body")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "conformance.plugin", "--pyargs", "conformance",
                           "--target", base, "--rule", "ROB-02,ROB-03", "--report-dir", str(tmp_path / "r"),
                           "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.count(doc["target_stopped"]["message"]) == 1
    assert {r["id"]: r["verdict"] for r in doc["rules"] if r["id"] in ("ROB-02", "ROB-03")} == \
        {"ROB-02": "FAIL", "ROB-03": "ERROR"}
