"""The kit against real third-party batch APIs run locally, described only by their bundled profiles.

SQS SendMessageBatch, EventBridge PutEvents, Kinesis PutRecords, Firehose PutRecordBatch and
DynamoDB BatchWriteItem (moto)
and CouchDB _bulk_docs (pouchdb-server) are started here on loopback; each test skips with the
install command when its server is not installed (moto is in the `test` extra: under CI=true a
missing moto fails). Their verdicts are pinned: they are the tables of docs/any-target.md, and a
change in one is either a kit regression or a deliberate change that must update that table too.
Each live run also proves that its stored report (tests/thirdparty/reports/, from which
`batchspec matrix` makes docs/compatibility.md) is current. A third API, the local Ledger bulk API,
proves that a batch API the kit has never seen is checked from a profile alone.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import conformance
from conformance import ASGIThreadTransport, Verdict, load_catalogue, load_profile

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ROOT / "conformance" / "profiles"
HERE = Path(__file__).resolve().parent / "thirdparty"

P, F, W, S = Verdict.PASS, Verdict.FAIL, Verdict.WARN, Verdict.SKIP

# What each target earns, and why (the same table is in docs/any-target.md). A SKIP pins its reason.
SQS_VERDICTS: dict[str, Any] = {
    "CORE-01": P, "CORE-02": P, "CORE-03": P, "CORE-04": P,
    "CORE-05": P,  # each of Successful/Failed keeps request order
    "CORE-06": P, "CORE-07": P,  # 400 BatchEntryIdsNotDistinct "Id ... repeated."
    "CORE-08": (S, "no summary fields"), "CORE-09": (S, "by id"),
    "HTTP-01": P, "HTTP-02": P, "HTTP-03": P,
    "HTTP-04": F,  # moto answers 500 (HTML) to a string, number or array body and to a non-array Entries
    "HTTP-05": P,  # {"__type", "message"} throughout
    "HTTP-06": W,  # a JSON batch labelled text/plain is processed (200)
    "HTTP-07": P,
    "PART-01": (S, "endpoints.read"), "PART-02": (S, "endpoints.read"), "PART-03": P,
    "PART-04": (S, "endpoints.read"), "PART-05": P, "PART-06": P,  # SenderFault says it
    "SIZE-01": P, "SIZE-02": P, "SIZE-03": (S, "max_bytes"), "SIZE-04": P, "SIZE-05": P,
}
COUCHDB_VERDICTS: dict[str, Any] = {
    "CORE-01": P, "CORE-02": P, "CORE-03": P, "CORE-04": P, "CORE-05": P, "CORE-06": P,
    "CORE-07": F,  # a duplicated _id is applied once and the twin gets a conflict, not a rejection
    "CORE-08": (S, "no summary fields"), "CORE-09": (S, "by id"),
    "HTTP-01": P, "HTTP-02": P, "HTTP-03": P,
    "HTTP-04": F,  # "docs" that is a string, object or number gets 500 (HTML stack trace)
    "HTTP-05": P,  # {"error", "reason"} throughout
    "HTTP-06": W,  # text/plain is accepted
    "HTTP-07": W,  # 201 Created, not 200
    "PART-01": P, "PART-02": P,
    "PART-03": F,  # "Document update conflict" does not name _rev
    "PART-04": P, "PART-05": P,
    "PART-06": W,  # nothing says whether a retry can succeed
    "SIZE-01": (S, "max_items"), "SIZE-02": (S, "max_items"), "SIZE-03": (S, "max_bytes"),
    "SIZE-04": (S, "max_items"), "SIZE-05": P,  # 201 []
}

# EventBridge PutEvents and Kinesis PutRecords: entries carry no id (correlation by position).
EVENTBRIDGE_VERDICTS: dict[str, Any] = {
    "CORE-01": P, "CORE-02": P, "CORE-03": P, "CORE-04": P,  # ErrorCode + ErrorMessage at the failed position
    "CORE-05": (S, "position-correlated"),
    "CORE-06": F,  # moto labels its 200 answer text/html (real EventBridge: application/x-amz-json-1.1)
    "CORE-07": (S, "items carry no id"),
    "CORE-08": P,  # FailedEntryCount agrees with the failed entries
    "CORE-09": P,
    "HTTP-01": P, "HTTP-02": P, "HTTP-03": P,
    "HTTP-04": F,  # a body that is not a batch gets 500 HTML
    "HTTP-05": (S, "fewer than two batch-level errors"),
    "HTTP-06": W,  # text/plain is processed
    "HTTP-07": P,
    "PART-01": (S, "endpoints.read"), "PART-02": (S, "endpoints.read"), "PART-03": P,
    "PART-04": (S, "endpoints.read"), "PART-05": P,
    "PART-06": W,  # InvalidArgument says nothing about retrying
    "SIZE-01": F,  # 400 ValidationException names the limit (10) but not the count received
    "SIZE-02": P, "SIZE-03": (S, "max_bytes"), "SIZE-04": P, "SIZE-05": P,
}
KINESIS_VERDICTS: dict[str, Any] = {
    "CORE-01": P,
    # No record can fail on its own for a reason a client controls: the rules that need a mixed batch SKIP.
    **{r: (S, "items.invalid") for r in ("CORE-02", "CORE-03", "CORE-04", "CORE-08", "CORE-09",
                                         "HTTP-01", "HTTP-02", "HTTP-03", "HTTP-07", "PART-03", "PART-05", "PART-06")},
    "CORE-06": P,  # judged on an all-valid batch (the mixed one SKIPs): JSON, the results schema
    "CORE-05": (S, "position-correlated"), "CORE-07": (S, "items carry no id"),
    "HTTP-04": F,  # a body that is not a batch gets 500 HTML
    "HTTP-05": P,  # {"__type", "message"} for the errors it answers
    "HTTP-06": W,
    "PART-01": (S, "endpoints.read"), "PART-02": (S, "endpoints.read"), "PART-04": (S, "endpoints.read"),
    "SIZE-01": F,  # 501 records: 400 ValidationException names the limit (500) but not the count received
    "SIZE-02": P, "SIZE-03": (S, "max_bytes"), "SIZE-04": P, "SIZE-05": P,
}
# Firehose PutRecordBatch: like Kinesis, records carry no id and none fails on its own for a client reason.
FIREHOSE_VERDICTS: dict[str, Any] = {
    "CORE-01": P,
    **{r: (S, "items.invalid") for r in ("CORE-02", "CORE-03", "CORE-04", "CORE-08", "CORE-09",
                                         "HTTP-01", "HTTP-02", "HTTP-03", "HTTP-07", "PART-03", "PART-05", "PART-06")},
    "CORE-06": P,  # judged on an all-valid batch (the mixed one SKIPs): JSON, the results schema
    "CORE-05": (S, "position-correlated"), "CORE-07": (S, "items carry no id"),
    "HTTP-04": F,  # 500 HTML for a body that is not a batch; malformed JSON gets 400 "Firehose None ... not found"
    "HTTP-05": (S, "fewer than two batch-level errors"),
    "HTTP-06": W,  # text/plain is processed
    "PART-01": (S, "endpoints.read"), "PART-02": (S, "endpoints.read"), "PART-04": (S, "endpoints.read"),
    "SIZE-01": F,  # moto accepts 501 records (200, 501 RecordIds; real Firehose: a 400 validation error)
    "SIZE-02": P, "SIZE-03": (S, "max_bytes"),
    "SIZE-04": W,  # no over-limit error, so nothing names the limit
    "SIZE-05": P,  # an empty Records list: 200 with an empty RequestResponses
}

# DynamoDB BatchWriteItem: a failure-only map (UnprocessedItems) and a POST read (GetItem). Every
# validation error refuses the whole batch, so no item fails on its own: the mixed-batch rules SKIP.
DYNAMODB_VERDICTS: dict[str, Any] = {
    "CORE-01": P,
    "CORE-06": P,  # judged on an all-valid batch (the mixed one SKIPs): JSON, the failure-only map's schema
    **{r: (S, "items.invalid") for r in ("CORE-02", "CORE-03", "CORE-04", "CORE-05", "CORE-08",
                                         "HTTP-01", "HTTP-02", "HTTP-03", "HTTP-07", "PART-01", "PART-02",
                                         "PART-03", "PART-04", "PART-05", "PART-06")},
    "CORE-07": F,  # identical twins: 400 ValidationException "Provided list of item keys contains duplicates", no key named
    "CORE-09": (S, "by id"),
    "HTTP-04": F,  # moto answers 500 HTML to malformed JSON and to bodies that are not a batch (real DynamoDB: 400)
    "HTTP-05": (S, "fewer than two batch-level errors"),
    "HTTP-06": W,  # text/plain is processed
    "SIZE-01": F,  # moto writes 26 requests (200; real DynamoDB refuses more than 25 with ValidationException)
    "SIZE-02": P,  # 25 written, read back with GetItem
    "SIZE-03": (S, "max_bytes"),
    "SIZE-04": W,  # no over-limit error, so nothing names the limit
    "SIZE-05": P,  # an empty list: 200 with an empty UnprocessedItems map
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer at {url} within {deadline_s:.0f}s")


def _serve(cmd: list[str], port: int, cwd: Path) -> Iterator[str]:
    log = open(cwd / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base + "/", proc)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def pouchdb_server_command() -> str | None:
    given = os.environ.get("BATCHSPEC_POUCHDB_SERVER")
    if given:
        return given
    local = ROOT / "build" / "node" / "node_modules" / ".bin" / "pouchdb-server"
    return str(local) if local.exists() else shutil.which("pouchdb-server")


def moto_server_command() -> str | None:
    """The moto_server of this interpreter's environment first (the venv's), then PATH's."""
    import sys

    local = Path(sys.executable).parent / "moto_server"
    return str(local) if local.exists() else shutil.which("moto_server")


@pytest.fixture(scope="module")
def moto(tmp_path_factory) -> Iterator[str]:
    exe = moto_server_command()
    if not exe:
        why = "moto_server is not installed: pip install 'moto[server]' (or: pip install -e '.[thirdparty]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the moto examples cannot run under CI: {why}", pytrace=False)
        pytest.skip(why)
    port = free_port()
    yield from _serve([exe, "-H", "127.0.0.1", "-p", str(port)], port, tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def pouchdb(tmp_path_factory) -> Iterator[str]:
    exe = pouchdb_server_command()
    if not exe or not shutil.which("node"):
        pytest.skip("pouchdb-server is not installed: npm install --prefix build/node --ignore-scripts "
                    "pouchdb-server (or set BATCHSPEC_POUCHDB_SERVER to its path)")
    port = free_port()
    # Run in a scratch folder: pouchdb-server writes log.txt and config.json where it starts.
    yield from _serve([exe, "--in-memory", "-o", "127.0.0.1", "-p", str(port)], port,
                      tmp_path_factory.mktemp("pouchdb"))


def _run(profile_path: Path, base_url: str, env: dict[str, str] | None = None,
         transport: Any = None, report_dir: Path | None = None) -> conformance.RunReport:
    profile = load_profile(profile_path, env={**os.environ, **(env or {})}).with_base_url(base_url)
    return conformance.run(profile, transport=transport, report_dir=report_dir)


def _assert_pinned(report: conformance.RunReport, pinned: dict[str, Any], classes: set[str]) -> None:
    by_id = {r.id: r for r in report.rules}
    errors = {r.id: r.reason for r in report.rules if r.verdict == Verdict.ERROR}
    assert not errors, f"ERROR verdicts (the kit could not evaluate these): {errors}"
    differ = {}
    for rule in load_catalogue().rules:
        r = by_id[rule.id]
        if rule.cls not in classes:
            assert r.verdict == S, f"{rule.id}: class {rule.cls} is not declared, yet {r.verdict.value}"
            continue
        want = pinned.get(rule.id)
        want_verdict, why = want if isinstance(want, tuple) else (want, None)
        if r.verdict != want_verdict or (why and why not in r.reason):
            differ[rule.id] = f"pinned {want_verdict.value if want_verdict else None}" + (
                f" ({why})" if why else "") + f", got {r.verdict.value}: {r.reason}"
    assert not differ, ("verdicts differ from the table in docs/any-target.md; a kit regression, or a deliberate "
                        "change that must update that table and this pin: " + repr(differ))


STORED = HERE / "reports"
PAGE = ROOT / "docs" / "compatibility.md"


def _stored_reports() -> list[str]:
    return [str(p) for p in sorted(STORED.glob("*.json"))]


def _assert_recorded(report_dir: Path, name: str) -> None:
    """The stored report docs/compatibility.md is made from says what this live run says: the same
    verdict for every rule, the same reason for every SKIP, the same level."""
    from conformance._matrix import reduce_report

    live = reduce_report(json.loads((report_dir / "report.json").read_text()))
    path = STORED / f"{name}.json"
    redo = (f"re-record it: batchspec matrix {report_dir}/report.json --keep tests/thirdparty/reports && "
            "batchspec matrix tests/thirdparty/reports/*.json --names-from profile --into docs/compatibility.md")
    assert path.exists(), f"{path.name} is missing; {redo}"
    stored = json.loads(path.read_text())

    def essence(doc: dict[str, Any]) -> dict[str, Any]:
        return {"level": doc["conformance"].get("reached"), "classes": doc["classes_declared"],
                "rules": {r["id"]: (r["verdict"], r["reason"] if r["verdict"] == "SKIP" else "") for r in doc["rules"]}}

    assert essence(stored) == essence(live), f"{path.name} differs from this run; {redo}"


def test_compatibility_page_is_what_batchspec_matrix_makes_of_the_stored_reports(tmp_path):
    """docs/compatibility.md is `batchspec matrix tests/thirdparty/reports/*.json --names-from profile
    --into docs/compatibility.md`: the command run on a copy of the page leaves it unchanged."""
    from conformance.cli import main

    copy = tmp_path / "compatibility.md"
    copy.write_text(PAGE.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["matrix", *_stored_reports(), "--names-from", "profile", "--into", str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8"), (
        "docs/compatibility.md is stale: batchspec matrix tests/thirdparty/reports/*.json --names-from profile "
        "--into docs/compatibility.md")
    assert not (ROOT / "scripts" / "gen_compatibility.py").exists()  # one way to make the page


def test_stored_reports_are_small_valid_reports_without_evidence():
    from conformance._schemas import errors

    assert len(_stored_reports()) >= 6
    for p in _stored_reports():
        doc = json.loads(Path(p).read_text())
        assert errors("report.schema.json", doc) == [], p
        assert Path(p).stat().st_size < 32_000, f"{p}: keep the reduced form (batchspec matrix --keep)"
        # no exchanges: nothing of a run but its verdicts
        assert not doc.get("preflight") and all(r["evidence"] == [] for r in doc["rules"]), p


def _assert_live_run(name: str, base_url: str, pinned: dict[str, Any], report_dir: Path,
                     env: dict[str, str] | None = None) -> None:
    """The profile conformance/profiles/<name>.yaml run against a live API: its preflight passes, its
    verdicts are the pinned ones in the four declared classes, and its stored report says the same."""
    report = _run(PROFILES / f"{name}.yaml", base_url, env, report_dir=report_dir)
    assert report.preflight.get("ok"), report.preflight
    _assert_pinned(report, pinned, {"CORE", "HTTP", "PART", "SIZE"})
    _assert_recorded(report_dir, name)


def test_sqs_send_message_batch_on_moto(moto, tmp_path):
    queue_url = f"{moto}/123456789012/batchspec"
    _assert_live_run("sqs-moto", moto, SQS_VERDICTS, tmp_path, {"BATCHSPEC_SQS_QUEUE_URL": queue_url})


def test_eventbridge_put_events_on_moto(moto, tmp_path):
    _assert_live_run("eventbridge-moto", moto, EVENTBRIDGE_VERDICTS, tmp_path)


def test_kinesis_put_records_on_moto(moto, tmp_path):
    _assert_live_run("kinesis-moto", moto, KINESIS_VERDICTS, tmp_path)


def test_firehose_put_record_batch_on_moto(moto, tmp_path):
    _assert_live_run("firehose-moto", moto, FIREHOSE_VERDICTS, tmp_path)


def test_dynamodb_batch_write_item_on_moto(moto, tmp_path):
    _assert_live_run("dynamodb-moto", moto, DYNAMODB_VERDICTS, tmp_path)


def test_couchdb_bulk_docs_on_pouchdb_server(pouchdb, tmp_path):
    _assert_live_run("couchdb-pouchdb", pouchdb, COUCHDB_VERDICTS, tmp_path)


# -- a batch API the kit has never seen, described by a profile only ------------------------------

def _ledger_report(bugs: frozenset[str] = frozenset(), rules: list[str] | None = None,
                   setup: list[dict[str, Any]] | None = None) -> conformance.RunReport:
    from thirdparty.ledger_api import create_app

    profile = load_profile(HERE / "ledger.yaml")
    if setup is not None:
        profile = conformance._profile.from_data(dict(profile.data, setup=setup), "ledger profile with setup")
    transport = ASGIThreadTransport(create_app(bugs))
    try:
        return conformance.run(profile, transport=transport, rules=rules)
    finally:
        transport.close()


def test_unseen_ledger_api_checked_from_its_profile_alone():
    report = _ledger_report()
    bad = {r.id: (r.verdict.value, r.reason) for r in report.rules
           if r.verdict not in (Verdict.PASS, Verdict.SKIP)}
    assert not bad, bad
    verdicts = {r.id: r for r in report.rules}
    # Judged, not skipped: position correlation, per-item HTTP status, summary, declared codes, retry flag.
    for rid in ("CORE-02", "CORE-03", "CORE-04", "CORE-07", "CORE-08", "CORE-09", "HTTP-05",
                "PART-01", "PART-02", "PART-06", "SIZE-01", "SIZE-05"):
        assert verdicts[rid].verdict == P, (rid, verdicts[rid].verdict, verdicts[rid].reason)
    assert "max_bytes" in verdicts["SIZE-03"].reason


@pytest.mark.parametrize("bug, rule", [
    ("reversed_outcomes", "CORE-09"),
    ("lying_tally", "CORE-08"),
    ("stores_rejected", "PART-02"),
    ("mixed_is_422", "HTTP-01"),
])
def test_unseen_ledger_api_defects_are_caught_through_the_profile(bug, rule):
    report = _ledger_report(frozenset({bug}), rules=[rule])
    got = {r.id: r for r in report.rules}[rule]
    assert got.verdict == F, f"{bug}: {rule} is {got.verdict.value}: {got.reason}"
    if bug != "mixed_is_422":  # checks whose setup is a mixed batch rightly ERROR when it gets a 4xx
        assert not [r.id for r in report.rules if r.verdict == Verdict.ERROR]


def test_setup_requests_run_before_the_preflight_and_stop_the_run_when_refused():
    """A setup request answered otherwise than declared is the preflight's ERROR, never verdicts."""
    report = _ledger_report(rules=["CORE-01"], setup=[{"method": "GET", "path": "/v2/ledger/none", "expect": [404]}])
    assert report.preflight.get("ok") and {r.id: r for r in report.rules}["CORE-01"].verdict == P
    report = _ledger_report(rules=["CORE-01"], setup=[{"method": "PUT", "path": "/v2/ledger/x", "body": {}}])
    assert not report.preflight.get("ok")
    assert "setup request 1 (PUT /v2/ledger/x) got 405" in report.preflight["reason"]
    assert {r.id: r for r in report.rules}["CORE-01"].verdict == Verdict.ERROR
