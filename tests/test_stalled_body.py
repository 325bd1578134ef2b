"""ROB-02's lying Content-Length runs beside the other checks only where that cannot stall them.

The check holds a request whose body never comes until the target gives up on it (the reference
server after 3 s). Beside the other checks that is free time; on a target that serves one request at
a time it would stall every check in flight, so the preflight first asks whether the target answers
another request while a body is stalled (Target.answers_beside_a_stalled_body), and the check runs
alone where it does not. The verdict is the same either way; a server that waits for ever FAILs
(tests/mutants/rob.py, awaits_a_short_body_for_ever, in the kill matrix).
"""
from __future__ import annotations

import asyncio
from typing import Any

from conftest import run_kit_socket, verdicts

from conformance import Verdict

# ROB-02 with two concurrent checks of CORE: a concurrent phase, so the preflight's question is asked.
RULES = ["ROB-02", "CORE-01", "CORE-02"]


def _one_request_at_a_time(app: Any) -> Any:
    """The reference server behind one lock held for a whole request, body included: a worker that
    serves a request at a time, as a single-threaded WSGI server does."""
    lock = asyncio.Lock()

    async def serial(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        async with lock:
            await app(scope, receive, send)
    serial.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return serial


def _stall_evidence(report: Any) -> list[dict[str, Any]]:
    return [e for e in report.preflight.get("evidence", []) if "body is held back" in (e.get("note") or "")
            or "waits for its body" in (e.get("note") or "")]


def test_a_target_that_answers_meanwhile_holds_the_stalled_body_beside_the_other_checks(reference_app):
    order: list[str] = []
    report = run_kit_socket(reference_app, rules=RULES, progress=lambda out, k, n: order.append(out.name))
    assert report.preflight["answers_beside_a_stalled_body"] is True
    held, probe = _stall_evidence(report)
    assert probe["request"]["method"] == "GET" and probe["response"]["status"] < 500
    # A slow client, never a cut body: the held batch was sent whole in the end, and answered.
    assert held["request"]["headers"]["Content-Length"] == str(len(held["request"]["body"].encode()))
    assert held["response"]["status"] == 200
    assert verdicts(report)["ROB-02"] == Verdict.PASS
    rob = next(r for r in report.rules if r.id == "ROB-02")
    lying = next(c for c in rob.checks if c.name == "test_body_shorter_than_its_length_is_not_awaited_for_ever")
    assert lying.verdict == Verdict.PASS and lying.figures["cases"] == ["lying_content_length"]
    # The reference server gives up on the missing bytes after its 3 s body timeout: observed, not assumed.
    assert lying.figures["waited_s"][0] >= 2.5
    # The wait outlasts the other concurrent checks: the checks that run alone (ROB-02's hostile
    # corpus) do not wait for it to end (engine.Background), and its outcome is still recorded.
    assert order.index("test_hostile_inputs_rejected_cleanly") < order.index(lying.name), order


def test_a_target_that_serves_one_request_at_a_time_gets_the_stalled_body_alone(reference_app):
    report = run_kit_socket(_one_request_at_a_time(reference_app), rules=RULES)
    assert report.preflight["answers_beside_a_stalled_body"] is False
    held, probe = _stall_evidence(report)
    assert probe["response"] is None and probe["error"]  # the probe waited behind the held request
    assert held["response"]["status"] == 200  # then the held batch was sent whole and answered
    # Run alone, the check still waits for the target's own body timeout and judges the same; and no
    # check waited behind it (beside it, each would have queued ~3 s behind the held request).
    lying = next(c for r in report.rules for c in r.checks if c.name.startswith("test_body_shorter_than"))
    assert lying.figures["waited_s"][0] >= 2.5
    others = [c for r in report.rules if r.id.startswith("CORE") for c in r.checks if c.verdict == Verdict.PASS]
    assert others and max(c.duration_s for c in others) < 2.0, [(c.name, c.duration_s) for c in others]
    assert {rule: verdicts(report)[rule] for rule in RULES} == dict.fromkeys(RULES, Verdict.PASS)


def test_the_preflights_items_are_deleted_where_the_profile_declares_a_delete(reference_app):
    """The preflight's batch and the stalled-body question's batch each apply one item; with
    `endpoints.delete` the kit deletes them afterwards, as it does a check's."""
    deleted: list[str] = []

    async def with_delete(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE" and scope["path"].startswith("/orders/"):
            deleted.append(scope["path"].removeprefix("/orders/"))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await reference_app(scope, receive, send)
    with_delete.router = getattr(reference_app, "router", None)  # type: ignore[attr-defined]

    report = run_kit_socket(with_delete, rules=RULES,
                            overrides={"endpoints": {"delete": {"method": "DELETE", "path": "/orders/{id}"}}})
    assert report.preflight["answers_beside_a_stalled_body"] is True
    import json

    sent = [json.loads(e["request"]["body"]) for e in report.preflight["evidence"] if e["request"]["method"] == "POST"]
    ids = [item["id"] for body in sent for item in body["operations"]]
    assert len(ids) == 2 and set(ids) <= set(deleted), (ids, deleted)


def test_the_stalled_body_worker_collects_its_one_file(reference_app, monkeypatch):
    # Each worker session collects only the suite files of the checks it may take: the stalled-body
    # check's worker collects test_rob.py alone, and the others never collect it.
    import conformance._engine as engine

    seen: list[list[str]] = []
    real = engine.worker_args

    def spy(files: list[str]) -> list[str]:
        seen.append(sorted(f.replace("\\", "/").rsplit("/", 1)[-1] for f in files))
        return real(files)

    monkeypatch.setattr(engine, "worker_args", spy)
    report = run_kit_socket(reference_app, rules=RULES)
    assert verdicts(report)["ROB-02"] is Verdict.PASS and verdicts(report)["CORE-01"] is Verdict.PASS
    assert seen.count(["test_rob.py"]) == 1, seen
    assert all(files == ["test_rob.py"] or "test_rob.py" not in files for files in seen), seen
    assert any(files == ["test_core.py"] for files in seen), seen
