"""Verdicts never claim more than they observed (issue 14): checks arrange to see the decisive state
on the reference server, say so when they cannot, and a fuzzing engine failure is an ERROR."""
from __future__ import annotations

import json

from conformance import Verdict
from conftest import run_kit


def _checks(report, rule: str):
    return [c for r in report.rules if r.id == rule for c in r.checks]


def test_async_checks_see_a_running_job_on_the_unslowed_reference_server(reference_app):
    report = run_kit(reference_app, rules=["ASYNC-03", "ASYNC-05", "ASYNC-06"])
    for rule in ("ASYNC-03", "ASYNC-05", "ASYNC-06"):
        (check,) = _checks(report, rule)
        assert check.verdict == Verdict.PASS, (rule, check.reason)
        assert not check.observed, (rule, check.observed)  # the running state was seen, nothing unobserved


def test_a_job_too_small_to_be_seen_running_is_a_pass_that_says_so(reference_app):
    report = run_kit(reference_app, rules=["ASYNC-03", "ASYNC-06"], overrides={"limits": {"async_max_items": 5}})
    for rule in ("ASYNC-03", "ASYNC-06"):
        (check,) = _checks(report, rule)
        assert check.verdict == Verdict.PASS
        if any("in-progress behaviour not observed" in n for n in check.observed):
            continue
        # A loaded machine can still catch a 5-item job before its end; then the PASS must rest on a
        # poll that really saw a non-terminal state (the note is owed only when no such poll exists).
        bodies = " ".join(json.dumps(e.to_dict()) for e in check.evidence)
        assert "running" in bodies or "queued" in bodies, (rule, check.observed)


def test_idem_03_provokes_in_flight_duplicates_on_the_reference_server(reference_app):
    report = run_kit(reference_app, rules=["IDEM-03"])
    (check,) = _checks(report, "IDEM-03")
    assert check.verdict == Verdict.PASS, check.reason
    notes = " ".join(n for e in check.evidence for n in [json.dumps(e.to_dict())])
    assert "provoked:" in notes or check.observed  # either overlap was shown, or the PASS says it was not


def test_short_retention_checks_say_what_they_did_not_wait_for(reference_app):
    report = run_kit(reference_app, rules=["IDEM-09", "ASYNC-12"])
    for rule in ("IDEM-09", "ASYNC-12"):
        (check,) = _checks(report, rule)
        assert check.verdict == Verdict.PASS
        assert any("was not observed" in n and "retention_check_fraction" in n for n in check.observed)


def test_ord_02_without_a_reference_field_says_the_order_was_not_observed(reference_app):
    import conformance
    from conformance import ASGIThreadTransport
    from conftest import reference_profile

    data = reference_profile().data
    del data["dependencies"]["reference_field"]
    transport = ASGIThreadTransport(reference_app)
    try:
        report = conformance.run(conformance._profile.from_data(data, "no reference_field"), transport=transport,
                                 rules=["ORD-02"])
    finally:
        transport.close()
    checks = _checks(report, "ORD-02")
    assert checks and all(c.verdict == Verdict.PASS for c in checks)
    assert all(any("order of application was not observed" in n for n in c.observed) for c in checks)


def test_an_openapi_document_schemathesis_cannot_use_is_an_error_not_a_skip(reference_app, tmp_path):
    # A path item behind a $ref that resolves to nothing: schemathesis cannot build its operations.
    doc = {"openapi": "3.0.3", "info": {"title": "x", "version": "1"}, "paths": {"/orders/batch": {"$ref": "#/nowhere"}}}
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    report = run_kit(reference_app, rules=["ROB-01"],
                     overrides={"openapi_file": str(path), "rob": {"max_examples": 2, "seed": 1}})
    (check,) = _checks(report, "ROB-01")
    assert check.verdict == Verdict.ERROR, (check.verdict, check.reason)
    assert "schemathesis" in check.reason
