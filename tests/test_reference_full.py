"""The whole kit (every class) against the reference server, in-process and over a socket.

Every rule must PASS, or SKIP for a reason that is legitimate for the reference server, or be
PENDING (a class still being written); never FAIL, WARN, INFO-as-violation or ERROR. The report
written by the run validates against schemas/report.schema.json.
"""
from __future__ import annotations

import json

import pytest

from conformance import Verdict, _schemas
from conftest import run_kit, run_kit_socket

# Rules whose checks cannot apply to the reference server, and why that is legitimate.
LEGITIMATE_SKIPS = {
    "CORE-09": "the reference server correlates by id, not by position",
    "ASYNC-11": "a restart cannot be caused over HTTP; tests/test_async_restart.py checks it",
    # The embedded run is one instance on SQLite: FLEET needs several instances on one database.
    **{f"FLEET-0{n}": "one embedded instance; FLEET is judged against a PostgreSQL fleet" for n in range(1, 6)},
}
# ... and those that need a real socket, legitimately skipped only in-process.
SOCKET_ONLY = {
    "IDEM-08": "dropping a connection needs a real socket",
    "ASYNC-14": "a callback receiver needs a real socket",
}
ALLOWED = {Verdict.PASS, Verdict.SKIP, Verdict.PENDING}


def _judge(report, in_process: bool) -> list[str]:
    legitimate = set(LEGITIMATE_SKIPS) | (set(SOCKET_ONLY) if in_process else set())
    bad = []
    for r in report.rules:
        if r.verdict not in ALLOWED:
            bad.append(f"{r.id} {r.verdict.value}: {r.reason}")
        elif r.verdict == Verdict.SKIP and r.id not in legitimate:
            # A SKIP of the reference server must be a check-level SKIP whose reason is explained here.
            bad.append(f"{r.id} SKIP without a reason known to be legitimate: {r.reason}")
    return bad


@pytest.mark.parametrize("mode", ["in-process", "socket", "socket-postgresql"])
def test_reference_server_passes_every_rule(mode, reference_app, tmp_path, request):
    runner = run_kit if mode == "in-process" else run_kit_socket
    if mode == "socket-postgresql":  # the same kit, the same verdicts, on the PostgreSQL backend
        from reference_server import create_app
        reference_app = create_app(request.getfixturevalue("postgres").new_database())
    report = runner(reference_app, report_dir=str(tmp_path / "report"))
    bad = _judge(report, mode == "in-process")
    assert not bad, f"the reference server ({mode}) is not judged conformant:\n" + "\n".join(bad)
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    errs = _schemas.errors("report.schema.json", doc)
    assert not errs, f"report.json does not validate: {errs[:5]}"
    assert {r["id"] for r in doc["rules"]} == {r.id for r in report.rules}
