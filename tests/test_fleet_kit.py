"""The FLEET class of the kit: `target.instances` in profiles, and the checks against real fleets.

Against 2 real `batchspec serve --db postgresql://...` processes on one database, every
FLEET check PASSes (FLEET-05 SKIPs with its reason); against 2 real processes on separate databases
declared as one service, FLEET-01 FAILs. The in-process mutants are judged by the kill matrix.
"""
from __future__ import annotations

import pytest

import conformance
from conformance import ProfileError, Verdict
from conformance._profile import loads
from conftest import reference_profile, verdicts
from _reference_process import start_server, stop_server

BASE = """
version: 1
target:
  base_url: http://127.0.0.1:8000
{instances}
classes: [CORE{classes}]
endpoints:
  batch: {{method: POST, path: /orders/batch}}
"""


def _profile(instances: str = "", classes: str = ""):
    return loads(BASE.format(instances=instances, classes=classes), "p.yaml")


def test_instances_declare_the_fleet_class():
    prof = _profile("  instances: [http://127.0.0.1:8001/, 'http://127.0.0.1:8002']")
    assert prof.instances == ["http://127.0.0.1:8000", "http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert "FLEET" in prof.classes
    assert "FLEET" not in _profile().classes and _profile().instances == ["http://127.0.0.1:8000"]


@pytest.mark.parametrize("instances, classes, message", [
    ("  instances: [http://127.0.0.1:8000/]", "", "repeats target.base_url"),
    ("  instances: [http://a.test, http://a.test/]", "", "target.instances[1] 'http://a.test/' repeats target.instances[0]"),
    ("", ", FLEET", "FLEET is declared by listing"),
    ("  instances: [ftp://a.test]", "", "instances"),
    ("  instances: []", "", "instances"),
    ("  instances: http://a.test", "", "instances"),
])
def test_bad_instances_are_profile_errors(instances, classes, message):
    with pytest.raises(ProfileError) as err:
        _profile(instances, classes)
    assert message in str(err.value)


def test_password_in_an_instance_url_is_a_secret():
    prof = _profile("  instances: ['http://u:s3cretpass@127.0.0.1:8001']")
    assert "s3cretpass" in prof.secrets()


def _fleet_profile(a: str, b: str):
    return reference_profile(a, {"target": {"instances": [b]}})


# `batchspec serve --host H --port P --db URL`, as a user starts an instance (the CLI's own code path).
BATCHSPEC_SERVE = "import sys; from conformance.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"


@pytest.fixture
def two_instances(postgres):
    db = postgres.new_database("kitfleet")
    procs = [start_server(db, BATCHSPEC_SERVE) for _ in range(2)]
    try:
        yield [url for _, url in procs]
    finally:
        for proc, _ in procs:
            stop_server(proc)


def test_real_postgresql_fleet_passes_every_fleet_rule(two_instances, tmp_path):
    a, b = two_instances
    report = conformance.run(_fleet_profile(a, b), classes=["CORE", "FLEET"], report_dir=str(tmp_path / "r"))
    got = verdicts(report)
    by_id = {r.id: r for r in report.rules}
    for rid in ("FLEET-01", "FLEET-02", "FLEET-03", "FLEET-04"):
        assert got[rid] == Verdict.PASS, f"{rid} {got[rid].value}: {by_id[rid].reason}"
    assert got["FLEET-05"] == Verdict.SKIP and "over HTTP" in by_id["FLEET-05"].reason
    bad = [f"{r.id} {r.verdict.value}: {r.reason}" for r in report.rules
           if r.cls == "CORE" and r.verdict not in (Verdict.PASS, Verdict.SKIP)]
    assert not bad, bad


def test_real_instances_on_separate_databases_fail_fleet_01(postgres, tmp_path):
    """Negative control with real components: two processes, two databases, declared as one service."""
    procs = [start_server(postgres.new_database("apart")) for _ in range(2)]
    try:
        report = conformance.run(_fleet_profile(procs[0][1], procs[1][1]), rules=["FLEET-01", "FLEET-02"],
                                 report_dir=str(tmp_path / "r"))
    finally:
        for proc, _ in procs:
            stop_server(proc)
    got = verdicts(report)
    assert got["FLEET-01"] == Verdict.FAIL and got["FLEET-02"] == Verdict.FAIL


@pytest.mark.parametrize("ci, outcome", [("true", "failed"), ("", "skipped")])
def test_missing_postgresql_skips_on_a_dev_machine_and_fails_under_ci(monkeypatch, ci, outcome):
    from conftest import _no_postgres

    monkeypatch.setenv("CI", ci)
    with pytest.raises(BaseException) as caught:
        _no_postgres("PostgreSQL is not installed")
    kind = type(caught.value).__name__
    assert kind == ("Failed" if outcome == "failed" else "Skipped"), kind
    assert "PostgreSQL is not installed" in str(caught.value)


def test_batchspec_serve_never_prints_the_database_password():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", BATCHSPEC_SERVE, "--port", "0",
                           "--db", "postgresql://u:hunter2@127.0.0.1:1/none"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "hunter2" not in done.stdout + done.stderr
    assert "cannot connect to the PostgreSQL database" in done.stderr
