"""SPEC §5 preflight: a 2xx JSON in which the profile's envelope finds no result for the item sent
stops the run (exit 3) with one line naming the pointer that found nothing."""
from __future__ import annotations

import json

from conftest import run_kit


async def hello_world(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"hello": "world"}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _results_for_other_ids(app):
    from mutants._base import Call, on_batch_response

    def fn(call: Call) -> None:
        doc = call.response_json()
        for r in doc.get("results", []):
            r["id"] = "someone-else"
        call.set_response_json(doc)
    return on_batch_response(fn)(app)


def test_json_without_results_stops_the_run_naming_the_pointer():
    report = run_kit(hello_world, classes=["CORE"])
    assert report.exit_code() == 3
    reason = report.preflight["reason"]
    assert "'/results'" in reason and "envelope.results" in reason and "\n" not in reason
    assert not report.preflight["ok"]


def test_results_that_name_no_item_sent_stop_the_run(reference_app):
    report = run_kit(_results_for_other_ids(reference_app), classes=["CORE"])
    assert report.exit_code() == 3
    assert "none for the item sent" in report.preflight["reason"] and "'/id'" in report.preflight["reason"]


def test_the_reference_server_passes_the_preflight(reference_app):
    report = run_kit(reference_app, rules=["CORE-01"])
    assert report.preflight["ok"], report.preflight
