"""Mutants of class ROB: robustness against fuzzed and hostile input, and recovery afterwards."""
from __future__ import annotations

import asyncio
import re
from typing import Any

from ._base import Call, Rewrite, mutant, variation

_NON_JSON_NUMBER = re.compile(rb"(?<![\"\w])-?(NaN|Infinity)\b")
_DEEP = re.compile(rb"[\[{]{1000}|(\{\"a\":){1000}")
# Fixed seeds keep the kill matrix deterministic; few examples keep it fast where ROB-01 is not the rule at stake.
# The case count bounds these runs, not the clock: a loaded machine must not change a verdict.
_FEW = {"rob": {"max_examples": 4, "seed": 1, "seconds": 300, "seconds_per_operation": 120}}
_FUZZ = {"rob": {"max_examples": 30, "seed": 1, "seconds": 300, "seconds_per_operation": 120}}
_HANG = {"target": {"timeout": 1}}  # a hang is noticed after 1 s


def _server_error(call: Call, message: str) -> None:
    call.set_response_json({"error": "internal_error", "message": message}, status=500)


@mutant("ROB-02", "a lenient JSON parser accepts NaN/Infinity, then serialising the answer crashes: 500",
        profile=_FEW, check="test_hostile_inputs_rejected_cleanly")
def nan_crashes(app):
    def fn(call: Call) -> None:
        if _NON_JSON_NUMBER.search(call.body):
            _server_error(call, "ValueError: Out of range float values are not JSON compliant")
    return Rewrite(app, response=fn)


@mutant("ROB-02", "a recursive parser spins on deeply nested bodies: no answer", profile={**_HANG, **_FEW},
        check="test_hostile_inputs_rejected_cleanly")
def deep_nesting_hangs(app):
    async def fn(call: Call) -> None:
        if _DEEP.search(call.body):
            await asyncio.sleep(30)
    return Rewrite(app, request=fn)


@mutant("ROB-02", "the body is read with no idle timeout: a body shorter than its Content-Length is awaited for "
        "as long as the client keeps the connection open", profile={**_HANG, **_FEW}, socket=True,
        check="test_body_shorter_than_its_length_is_not_awaited_for_ever")
def awaits_a_short_body_for_ever(app):
    # Rewrite's plumbing is the defect: it collects a request's body (up to the reference server's byte
    # limit; a larger body is streamed on to the app, which refuses it while it streams, SIZE-03) with
    # no idle timeout, and hands it to the app only once complete, so a body that stops arriving is
    # awaited for as long as the client keeps the connection open.
    return Rewrite(app, method="POST", path=None)


@mutant("ROB-02", "a non-ASCII id is stored through a latin-1 column: read back, it is mojibake", profile=_FEW,
        check="test_hostile_inputs_rejected_cleanly")
def non_ascii_ids_garbled(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 200 and isinstance(doc, dict) and "id" in doc and isinstance(doc["id"], str):
            try:
                doc["id"] = doc["id"].encode("utf-8").decode("latin-1")
            except UnicodeError:
                return
            call.set_response_json(doc)
    return Rewrite(app, method="GET", path=lambda p: p.startswith("/orders/") and p != "/orders/batch",
                   response=fn)


def _float_raises(value: Any) -> bool:
    """Whether `float(value)` raises (TypeError for null, ValueError for a string that is no number)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return True
    return False


@mutant("ROB-02", "a hand-written item check refuses objects and arrays in any field (invalid_<field>), then "
        "computes float(item['amount']): an amount that is null or a string that is no number raises: 500",
        profile=_FEW, may_also=["ROB-01"],  # a fuzzed batch may carry such an amount (seed-dependent)
        check="test_hostile_inputs_rejected_cleanly")
def scalar_amount_crashes(app):
    def request(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        call.state["boom"] = isinstance(ops, list) and any(
            isinstance(op, dict) and "amount" in op and not isinstance(op["amount"], (dict, list, bool))
            and _float_raises(op["amount"]) for op in ops)

    def response(call: Call) -> None:
        if call.state.get("boom"):
            _server_error(call, "TypeError: float() argument must be a string or a real number, not 'NoneType'")
    return Rewrite(app, request=request, response=response)


@variation("a lenient item parser: a null optional member (note, parent_id) is taken as absent, and a number in "
           "the text member note is stored as its decimal text (12345 as \"12345\")", classes=["ROB"])
def lenient_scalars(app):
    # ROB-02's wrong scalars get ok results here: each must read back, its other members as sent.
    def request(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if not isinstance(ops, list):
            return
        for op in ops:
            if not isinstance(op, dict):
                continue
            for name in ("note", "parent_id"):
                if name in op and op[name] is None:
                    del op[name]
            note = op.get("note")
            if isinstance(note, (int, float)) and not isinstance(note, bool):
                op["note"] = str(note)
        call.set_json(doc)
    return Rewrite(app, request=request)


@mutant("ROB-01", "unknown top-level members of a batch body raise a KeyError: 500", profile=_FUZZ,
        also=["SIZE-03"],  # SIZE-03's over-limit body carries an extra member: 500, not 413
        check="test_fuzzing_finds_no_5xx_and_no_undocumented_response")
def extra_members_crash(app):
    def fn(call: Call) -> None:
        doc = call.json()
        if isinstance(doc, dict) and set(doc) - {"operations", "atomic"}:
            _server_error(call, "KeyError")
    return Rewrite(app, response=fn)


@mutant("ROB-01", "a malformed envelope is answered 406, a status the OpenAPI document does not declare",
        profile=_FUZZ, also=["HTTP-04"],
        check="test_fuzzing_finds_no_5xx_and_no_undocumented_response")
def undocumented_error_shape(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "invalid_body":
            call.status = 406
    return Rewrite(app, response=fn)


@mutant("ROB-01", "an item whose depends_on names an id outside the batch sends the planner into an endless loop",
        profile={**_HANG, **_FUZZ}, also=["ORD-04"],
        check="test_fuzzing_finds_no_5xx_and_no_undocumented_response")
def unknown_dependency_hangs(app):
    async def fn(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if not isinstance(ops, list):
            return
        ids = {op.get("id") for op in ops if isinstance(op, dict)}
        for op in ops:
            deps = op.get("depends_on") if isinstance(op, dict) else None
            if isinstance(deps, list) and any(d not in ids for d in deps):
                await asyncio.sleep(30)
    return Rewrite(app, request=fn)


class _PoisonedAfterDisconnect:
    """A client that disconnects mid-body leaves the worker's transaction open: later writes fail."""

    def __init__(self, app: Any):
        self.app = app
        self.router = getattr(app, "router", None)
        self.poisoned = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.poisoned:
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body",
                        "body": b'{"error": "internal_error", "message": "database is locked"}'})
            return

        async def watch() -> dict[str, Any]:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self.poisoned = True
            return msg

        await self.app(scope, watch, send)


@mutant("ROB-03", "a client that disconnects mid-body leaks the worker's open transaction: every later write gets 500",
        socket=True, profile=_FEW, may_also=["SIZE-01", "SIZE-02", "SIZE-03", "SIZE-05"],
        check="test_normal_batch_succeeds_after_hostile_run")
def poisoned_after_disconnect(app):
    return _PoisonedAfterDisconnect(app)


@mutant("ROB-01", "a job read with a 32-digit cursor overflows the database integer: 500", profile=_FEW,
        check="test_fuzzing_finds_no_5xx_and_no_undocumented_response")
def huge_cursor_crashes(app):
    def fn(call: Call) -> None:
        for part in call.query.split("&"):
            name, _, value = part.partition("=")
            if name in ("cursor", "limit") and len(value.lstrip("-+")) > 18:
                _server_error(call, "OverflowError: Python int too large to convert to SQLite INTEGER")
    return Rewrite(app, method="GET", path=lambda p: p.startswith("/imports/batch/"), response=fn)


@mutant("ROB-01", "a method a job path does not take gets 405 with an Allow that leaves out DELETE",
        profile=_FEW, check="test_fuzzing_finds_no_5xx_and_no_undocumented_response")
def allow_leaves_out_delete(app):
    def fn(call: Call) -> None:
        if call.status == 405:
            call.set_response_header("allow", "GET, HEAD")
    return Rewrite(app, method=None, path=lambda p: p.startswith("/imports/batch/"), response=fn)


class _PoisonedPoolConnection:
    """Requests draw database connections from a pool of three in turn (a FIFO pool: sequential requests
    rotate through it). A client that disconnects mid-body leaves the transaction open on the connection
    that served it, which goes back to the pool unrolled-back: every later request that draws that one
    connection gets 500, the other two serve normally."""

    POOL = 3

    def __init__(self, app: Any):
        self.app = app
        self.router = getattr(app, "router", None)
        self.turn = 0
        self.poisoned: set[int] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        conn = self.turn % self.POOL
        self.turn += 1
        if conn in self.poisoned:
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error": "internal_error", "message": '
                        b'"current transaction is aborted, commands ignored until end of transaction block"}'})
            return

        async def watch() -> dict[str, Any]:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self.poisoned.add(conn)
            return msg

        await self.app(scope, watch, send)


@mutant("ROB-03", "a client that disconnects mid-body leaves its pooled connection in an aborted transaction: one "
        "request in three (those that draw that connection) gets 500, the next normal batch may well succeed",
        socket=True, profile=_FEW, may_also=["SIZE-01", "SIZE-02", "SIZE-03", "SIZE-05"],
        check="test_normal_batch_succeeds_after_hostile_run")
def one_pooled_connection_poisoned(app):
    return _PoisonedPoolConnection(app)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@mutant("ROB-02", "the write-time error path (an id that already exists) puts the id in the error's log line, "
        "written through a latin-1 handler: a non-ASCII id is stored and answered cleanly the first time, and its "
        "retry (the same batch sent again) crashes: 500", profile=_FEW,
        check="test_hostile_items_sent_again_answered_cleanly")
def retried_non_ascii_id_crashes(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        results = doc.get("results") if isinstance(doc, dict) else None
        if call.status != 200 or not isinstance(results, list):
            return
        for r in results:
            if isinstance(r, dict) and r.get("status") == "error" and isinstance(r.get("error"), dict) \
                    and r["error"].get("code") == "already_exists" and isinstance(r.get("id"), str) \
                    and not _latin1(r["id"]):
                _server_error(call, "UnicodeEncodeError: 'latin-1' codec can't encode characters in position 12-15")
                return
    return Rewrite(app, response=fn)


@mutant("ROB-02", "text members other than the id are stored in VARCHAR(255) columns that nothing validates first "
        "(the id's length is checked): an item whose note is longer raises the driver's DataError, answered 500",
        profile=_FEW, may_also=["ROB-01"],  # a fuzzed batch may carry such a note (seed-dependent)
        check="test_hostile_inputs_rejected_cleanly")
def long_note_crashes(app):
    def request(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        call.state["boom"] = isinstance(ops, list) and any(
            isinstance(op, dict) and isinstance(op.get("note"), str) and len(op["note"]) > 255 for op in ops)

    def response(call: Call) -> None:
        if call.state.get("boom"):
            _server_error(call, "DataError: value too long for type character varying(255)")
    return Rewrite(app, request=request, response=response)
