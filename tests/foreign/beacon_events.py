"""Beacon events: an event API whose entries carry no id, answered by position with a failure count.

A foreign-envelope fixture: the kit knows nothing of it but its profile (tests/foreign/beacon_events.yaml,
written from this documentation and docs/any-target.md only).

API documentation
-----------------
POST /v1/events:put   Content-Type: application/json
    Body: {"events": [{"topic": str (1..64 chars), "payload": object, "priority"?: "low"|"high"}, ...]},
    1 to 25 events. Events carry no id; each is accepted or refused on its own.
    200 {"failedCount": n, "entries": [...]}: entries[i] answers events[i]:
        accepted: {"eventId": "<server id>"}
        refused:  {"errorCode": "InvalidTopic" | "InvalidPayload" | "InvalidPriority", "errorMessage": str,
                   "retryable": false}
    Batch-level errors: {"errorCode": str, "errorMessage": str}:
        400 MalformedRequest (not JSON, not an object, events missing or not an array),
        400 EmptyRequest (no events), 413 TooManyEvents ("at most 25 events; got N"),
        415 UnsupportedMediaType.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_EVENTS = 25

BUGS = {"drops_entry": "CORE-02", "invents_entry": "CORE-02", "fake_ok": "HTTP-03",
        "wrong_failed_count": "CORE-08", "no_event_limit": "SIZE-01", "refuses_whole_batch": "HTTP-01",
        "reversed_entries": "CORE-09", "crashes_on_bad_json": "HTTP-04"}
# Issue 13's list of defects (see tally_rpc.COVERS): kind -> BUGS entry, or why the shape has none.
COVERS = {"dropped result": "drops_entry", "invented result": "invents_entry", "fake ok": "fake_ok",
          "phantom reads": "n/a: no endpoint reads an event back", "unenforced limit": "no_event_limit",
          "one bad item refuses the batch": "refuses_whole_batch",
          "valid items written behind a 4xx": "n/a: no read endpoint, and events carry no id to repeat",
          "wrong failure count": "wrong_failed_count", "crash on a hostile body": "crashes_on_bad_json"}
VARIATIONS = {"too_many_as_400": "more than 25 events answered 400 instead of 413"}
# Not in the tables (tests/test_any_target.py uses it): failures_index answers in the failure-only
# dialect, {"failedCount": n, "failures": [{"index": i, "errorCode", ...}]} (only the refused events).


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "errorMessage": message}, status_code=status)


def _problem(event: Any) -> tuple[str, str] | None:
    if not isinstance(event, dict):
        return "InvalidPayload", "an event is an object"
    topic = event.get("topic")
    if not isinstance(topic, str) or not 1 <= len(topic) <= 64:
        return "InvalidTopic", "topic must be a string of 1 to 64 characters"
    if not isinstance(event.get("payload"), dict):
        return "InvalidPayload", "payload must be an object"
    if event.get("priority", "low") not in ("low", "high"):
        return "InvalidPriority", "priority is low or high"
    return None


def create_app(bugs: frozenset[str] = frozenset()) -> Starlette:
    async def put(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, "UnsupportedMediaType", f"send application/json, not {ctype or 'nothing'}")
        try:
            doc = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            if "crashes_on_bad_json" in bugs:
                raise RuntimeError("unhandled parse error") from None  # the planted crash: a 500
            return _error(400, "MalformedRequest", "the body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
            return _error(400, "MalformedRequest", "the body is {\"events\": [...]}")
        events = doc["events"]
        if not events:
            return _error(400, "EmptyRequest", "send at least one event")
        if len(events) > MAX_EVENTS and "no_event_limit" not in bugs:
            return _error(400 if "too_many_as_400" in bugs else 413, "TooManyEvents",
                          f"at most {MAX_EVENTS} events; got {len(events)}")
        problems = [_problem(e) for e in events]
        if "refuses_whole_batch" in bugs and any(problems):
            return _error(400, "InvalidRequest", "an event is invalid; nothing was put")
        entries: list[dict[str, Any]] = []
        for p in problems:
            if p is None or "fake_ok" in bugs:
                entries.append({"eventId": str(uuid.uuid4())})
            else:
                entries.append({"errorCode": p[0], "errorMessage": p[1], "retryable": False})
        failed = sum(1 for e in entries if "errorCode" in e)
        if "failures_index" in bugs:
            # The failure-only dialect: only the refused events, each naming its index.
            entries = [{"index": i, **e} for i, e in enumerate(entries) if "errorCode" in e]
            if "drops_entry" in bugs and entries:
                entries.pop()
            if "invents_entry" in bugs:
                entries.append({"index": len(events), "errorCode": "InvalidTopic", "errorMessage": "topic",
                                "retryable": False})
            if "reversed_entries" in bugs:
                entries.reverse()
            return JSONResponse({"failedCount": 0 if "wrong_failed_count" in bugs else failed,
                                 "failures": entries})
        if "drops_entry" in bugs and len(entries) > 1:
            entries.pop()
        if "invents_entry" in bugs:
            entries.append({"eventId": str(uuid.uuid4())})
        if "reversed_entries" in bugs:
            entries.reverse()
        if "wrong_failed_count" in bugs:
            failed = 0
        return JSONResponse({"failedCount": failed, "entries": entries})

    return Starlette(routes=[Route("/v1/events:put", put, methods=["POST"])])
