"""Mutants of class ATOM: the all-or-nothing mode of the batch endpoint (`"atomic": true` in the body)."""
from __future__ import annotations

import json
from typing import Any

from ._base import PASS_THROUGH_BYTES, Call, Rewrite, _prepend, mutant, variation

PATH = "/orders/batch"
# An item the reference server always rejects: mutants append it to force a rollback they then hide.
SENTINEL_ID = "__mutant-sentinel__"
SENTINEL = {"id": SENTINEL_ID, "amount": -1, "currency": "USD"}


def _is_atomic(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("atomic") is True and isinstance(doc.get("operations"), list)


def _not_applied(result_id: str) -> dict[str, Any]:
    return {"id": result_id, "status": "error",
            "error": {"code": "not_applied", "message": "not applied: the atomic batch failed", "retryable": True}}


def _summary(results: list[dict[str, Any]]) -> dict[str, int]:
    ok = sum(1 for r in results if r.get("status") == "ok")
    return {"total": len(results), "succeeded": ok, "failed": len(results) - ok}


def _failure_shape(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the reference answers for a failed atomic batch, built from per-item results."""
    out = [r if r.get("status") == "error" else _not_applied(r["id"]) for r in results]
    return {"status": "failed", "error": {"code": "atomic_batch_failed", "message": "atomic batch not applied"},
            "results": out, "summary": {"total": len(out), "succeeded": 0, "failed": len(out)}}


def _rewrite(app: Any, on_request, on_response, path: str = PATH) -> Rewrite:
    return Rewrite(app, path=path, request=on_request, response=on_response)


def _within_atomic_limit(app: Any) -> Any:
    """Whether an atomic request is one the reference's atomic path takes (1 to atomic_max_items items):
    a mutant that breaks what happens inside the transaction leaves the size checks before it alone
    (an empty or over-limit atomic batch still gets 400 batch_empty / 413 batch_too_large: SIZE-01/05)."""
    limit = app.state.service.settings.atomic_max_items
    return lambda doc: 0 < len(doc["operations"]) <= limit


@mutant("ATOM-01", "atomic batch reported failed but the valid items were committed (no rollback)",
        # it strips the atomic member before the server sees it: IDEM-02's atomic variant is then the same body
        also=["IDEM-02"], check="test_failing_item_means_nothing_applied")
def no_rollback(app):
    takes = _within_atomic_limit(app)

    def req(call: Call) -> None:
        doc = call.json()
        call.state["atomic"] = _is_atomic(doc) and takes(doc)
        if call.state["atomic"]:
            doc.pop("atomic")
            call.set_json(doc)

    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.state.get("atomic") and call.status == 200 and any(r.get("status") == "error" for r in doc["results"]):
            call.set_response_json(_failure_shape(doc["results"]), 422)
    return _rewrite(app, req, resp)


@mutant("ATOM-01", "validates every item up front, then writes without a transaction: a write-time "
                   "conflict keeps the items written before it", also=["IDEM-02"],  # the atomic member stripped too
        check="test_failure_at_write_time_rolls_back")
def validation_only_rollback(app):
    from reference_server.validation import ItemValidator

    check = ItemValidator().check_item
    takes = _within_atomic_limit(app)

    def req(call: Call) -> None:
        doc = call.json()
        if _is_atomic(doc) and takes(doc) and all(isinstance(i, dict) and check(i) is None for i in doc["operations"]):
            call.state["atomic"] = True
            doc.pop("atomic")
            call.set_json(doc)

    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.state.get("atomic") and call.status == 200 and any(r.get("status") == "error" for r in doc["results"]):
            call.set_response_json(_failure_shape(doc["results"]), 422)
    return _rewrite(app, req, resp)


@mutant("ATOM-01", "the atomic flag is ignored: a failing item leaves the valid ones applied, 200",
        # the flag stripped before the server sees it: IDEM-02's variant is the same body, and an atomic
        # batch over limits.atomic_max_items meets the sync limit only (SIZE-01's atomic check)
        also=["ATOM-03", "IDEM-02", "SIZE-01"],
        check="test_failing_item_means_nothing_applied")
def atomic_flag_ignored(app):
    def req(call: Call) -> None:
        doc = call.json()
        if _is_atomic(doc):
            doc.pop("atomic")
            call.set_json(doc)
    return _rewrite(app, req, None)


class _ChunkedAtomic:
    """Runs an atomic batch of more than `chunk` items (up to the declared 100) as consecutive atomic
    batches of `chunk` items: a failing chunk is rolled back, the chunks before it stay committed."""

    def __init__(self, app: Any, chunk: int = 50):
        self.app, self.chunk = app, chunk
        self.router = getattr(app, "router", None)

    async def _inner(self, scope: dict[str, Any], doc: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        out: dict[str, Any] = {"status": 0, "body": b""}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                out["status"] = msg["status"]
            elif msg["type"] == "http.response.body":
                out["body"] += msg.get("body", b"")
        await self.app(dict(scope, headers=headers + [(b"content-length", str(len(body)).encode())]),
                       _prepend(body, False, None), send)
        return out["status"], json.loads(out["body"] or b"null")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more and len(body) <= PASS_THROUGH_BYTES:  # a larger body is streamed on untouched (SIZE-03)
            msg = await receive()
            body, more = body + msg.get("body", b""), bool(msg.get("more_body"))
        try:
            doc = None if more else json.loads(body)
        except (ValueError, RecursionError):
            doc = None
        if not (_is_atomic(doc) and self.chunk < len(doc["operations"]) <= 100):
            await self.app(scope, _prepend(body, more, receive), send)
            return
        ops, done = doc["operations"], []
        for start in range(0, len(ops), self.chunk):
            status, answer = await self._inner(scope, dict(doc, operations=ops[start:start + self.chunk]))
            if status == 200:
                done += answer["results"]
                continue
            if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
                return await _send_json(send, status, answer)
            # The committed chunks are reported not applied, as if the whole batch had been rolled back.
            later = [o.get("id") if isinstance(o, dict) else None for o in ops[start + self.chunk:]]
            answer["results"] = ([_not_applied(r["id"]) for r in done] + answer["results"]
                                 + [_not_applied(i) for i in later])
            answer["summary"] = {"total": len(ops), "succeeded": 0, "failed": len(ops)}
            return await _send_json(send, status, answer)
        await _send_json(send, 200, {"results": done, "summary": _summary(done)})


async def _send_json(send: Any, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@mutant("ATOM-01", "a large atomic batch runs as transactions of 50 items: a failure in a later chunk rolls "
                   "back only that chunk, the earlier ones stay committed (reported not_applied)",
        check="test_failure_at_the_end_of_a_full_batch_rolls_back_all")
def atomic_in_chunks(app):
    return _ChunkedAtomic(app)


@mutant("ATOM-02", "atomic failure with only a batch-level message (the seed's anti-pattern)", may_also=["ROB-01"],
        # CORE-06 judges the answer to a failed atomic batch against the schema: it has no result list
        also=["ATOM-03", "CORE-06"],
        check="test_failure_names_each_failing_item_and_why")
def batch_level_message_only(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            failing = [r["id"] for r in doc["results"] if r["error"]["code"] != "not_applied"]
            call.set_response_json({"status": "failed", "error": {
                "code": "atomic_batch_failed", "message": f"{len(failing)} items invalid; nothing applied"}})
    return _rewrite(app, None, resp)


@mutant("ATOM-02", "atomic failure marks every item not_applied, the failing ones too: no reason given",
        check="test_failure_names_each_failing_item_and_why")
def every_item_not_applied(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            doc["results"] = [_not_applied(r["id"]) for r in doc["results"]]
            call.set_response_json(doc)
    return _rewrite(app, None, resp)


@mutant("ATOM-03", "atomic failure answered 200 (nothing applied, body unchanged)",
        check="test_failure_says_not_applied")
def failure_answered_200(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            call.status = 200
    return _rewrite(app, None, resp)


@mutant("ATOM-03", "atomic failure without a batch-level status: 422 with per-item results only",
        may_also=["ROB-01"], also=[],
        check="test_failure_says_not_applied")
def failure_without_status(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            call.set_response_json({"results": doc["results"], "summary": doc["summary"]})
    return _rewrite(app, None, resp)


@mutant("ATOM-03", "the valid items of a failed atomic batch are reported ok with data although rolled back",
        check="test_failure_says_not_applied")
def rolled_back_items_reported_ok(app):
    def req(call: Call) -> None:
        doc = call.json()
        call.state["items"] = doc["operations"] if _is_atomic(doc) else []

    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            by_id = {i.get("id"): i for i in call.state.get("items", []) if isinstance(i, dict)}
            doc["results"] = [r if r["error"]["code"] != "not_applied" else
                              {"id": r["id"], "status": "ok", "data": dict(by_id.get(r["id"], {}), version=1)}
                              for r in doc["results"]]
            call.set_response_json(doc)
    return _rewrite(app, req, resp)


def _with_sentinel(app, on_all_valid):
    """Every atomic batch gets an invalid sentinel item (so the transaction always rolls back);
    `on_all_valid(call, results, items)` rewrites the answer when only the sentinel failed. An empty
    or over-limit atomic batch is left alone: the sentinel would change its count (SIZE-01, SIZE-05)."""
    takes = _within_atomic_limit(app)

    def req(call: Call) -> None:
        doc = call.json()
        call.state["atomic"] = _is_atomic(doc) and takes(doc)
        if call.state["atomic"]:
            call.state["items"] = list(doc["operations"])
            doc["operations"].append(dict(SENTINEL))
            call.set_json(doc)

    def resp(call: Call) -> None:
        doc = call.response_json()
        if not call.state.get("atomic") or not isinstance(doc, dict) or "results" not in doc:
            return
        results = [r for r in doc["results"] if r.get("id") != SENTINEL_ID]
        if all(r["status"] == "error" and r["error"]["code"] == "not_applied" for r in results):
            on_all_valid(call, results, call.state.get("items", []))
        else:
            doc["results"] = results
            doc["summary"] = {"total": len(results), "succeeded": 0, "failed": len(results)}
            call.set_response_json(doc)
    return _rewrite(app, req, resp)


@mutant("ATOM-04", "an all-valid atomic batch is answered 200 all ok but its transaction is never committed",
        check="test_all_valid_atomic_batch_applies_every_item")
def commit_lost(app):
    def all_valid(call: Call, results, items) -> None:
        ok = [{"id": i["id"], "status": "ok", "data": dict(i, version=1)} for i in items]
        call.set_response_json({"results": ok, "summary": _summary(ok)}, 200)
    return _with_sentinel(app, all_valid)


@mutant("ATOM-04", "every atomic batch is rolled back: an all-valid one gets 422 with every item not_applied",
        check="test_all_valid_atomic_batch_applies_every_item")
def always_rolled_back(app):
    def all_valid(call: Call, results, items) -> None:
        call.set_response_json(_failure_shape(results), 422)
    return _with_sentinel(app, all_valid)


@mutant("ATOM-04", "atomic batches are capped at 50 items although 100 are declared",
        # 101 atomic items are refused naming the real cap, 50, not the declared limit SIZE-01 expects
        also=["SIZE-01"],
        check="test_atomic_batch_at_its_limit_is_applied")
def atomic_limit_below_declared(app):
    def req(call: Call) -> None:
        doc = call.json()
        if _is_atomic(doc) and len(doc["operations"]) > 50:
            call.state["items"] = doc["operations"]
            doc["operations"] = []  # nothing reaches the store
            call.set_json(doc)

    def resp(call: Call) -> None:
        items = call.state.get("items")
        if items:
            call.set_response_json({"error": "batch_too_large",
                                    "message": f"Maximum 50 items per batch; received {len(items)}"}, 413)
    return _rewrite(app, req, resp)


@mutant("ATOM-05", "the OpenAPI document does not document the atomic mode (no x-batch-atomic, no `atomic` field)",
        check="test_atomic_mode_is_documented")
def atomic_undocumented(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict):
            call.set_response_json(_openapi_without_atomic(doc))
    return Rewrite(app, method="GET", path="/openapi.json", response=resp)


@mutant("ATOM-05", "the batch endpoint is silently all-or-nothing: without the flag a failing item rolls "
                   "back the rest (answered 200 with per-item results)", also=["CORE-03", "PART-01", "ORD-01", "IDEM-07",
                                                                  "IDEM-02"],  # every body made atomic: the variant is the same body
        # CORE-08 holds: the summary agrees with the entries the answer returns (issue 13)
        errors=["IDEM-01", "IDEM-06"],
        check="test_atomic_is_not_the_silent_default")
def atomic_by_default(app):
    def req(call: Call) -> None:
        doc = call.json()
        call.state["atomic"] = isinstance(doc, dict) and "atomic" not in doc and isinstance(doc.get("operations"), list) \
            and 0 < len(doc["operations"]) <= 100
        if call.state["atomic"]:
            doc["atomic"] = True
            call.set_json(doc)

    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.state.get("atomic") and isinstance(doc, dict) and doc.get("status") == "failed":
            call.set_response_json({"results": doc["results"], "summary": doc["summary"]}, 200)
    return _rewrite(app, req, resp)


# -- legal variations: other ways of selecting and reporting the atomic mode ----------------------

def _openapi_without_atomic(doc: dict[str, Any]) -> dict[str, Any]:
    """The reference document minus its own atomic documentation (the variation documents it its way)."""
    for path_item in (doc.get("paths") or {}).values():
        for op in path_item.values():
            if isinstance(op, dict):
                op.pop("x-batch-atomic", None)
    (doc.get("x-batch") or {}).pop("atomic_max_items", None)
    for schema in (doc.get("components") or {}).get("schemas", {}).values():
        if isinstance(schema, dict):
            (schema.get("properties") or {}).pop("atomic", None)
    return doc


class _AtomicRoute:
    """Serves the atomic mode at its own path: forwards it to the batch route with `atomic: true`."""

    def __init__(self, app: Any, path: str):
        self.path = path
        self.router = getattr(app, "router", None)

        def req(call: Call) -> None:
            doc = call.json()
            if call.header("x-variation-atomic") and isinstance(doc, dict):
                doc["atomic"] = True
                call.set_json(doc)

        def doc_resp(call: Call) -> None:
            doc = _openapi_without_atomic(call.response_json())
            op = dict(doc["paths"][PATH]["post"], operationId="batchOrdersAtomic",
                      summary="Create orders in one all-or-nothing batch")
            doc["paths"][path] = {"post": op}
            call.set_response_json(doc)

        self.app = Rewrite(Rewrite(app, path=PATH, request=req), method="GET", path="/openapi.json",
                           response=doc_resp)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            scope = dict(scope, path=PATH, raw_path=PATH.encode(),
                         headers=list(scope["headers"]) + [(b"x-variation-atomic", b"1")])
        await self.app(scope, receive, send)




@variation("atomic mode at its own path (POST /orders/batch/atomic), documented as its own operation",
           classes=["ATOM"], profile={"endpoints": {"atomic": {"method": "POST", "path": "/orders/batch/atomic"}}})
def atomic_at_own_path(app):
    return _AtomicRoute(app, "/orders/batch/atomic")


@variation("atomic mode chosen by a query parameter (?mode=atomic), documented as a parameter; failure "
           "answered 409 with the other items `rolled_back`", classes=["ATOM"],
           profile={"endpoints": {"atomic": {"method": "POST", "path": "/orders/batch", "query": {"mode": "atomic"}}}})
def atomic_by_query_409(app):
    def req(call: Call) -> None:
        doc = call.json()
        if "mode=atomic" in call.query and isinstance(doc, dict):
            doc["atomic"] = True
            call.set_json(doc)

    def resp(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            for r in doc["results"]:
                if r["error"]["code"] == "not_applied":
                    r["error"]["code"] = "rolled_back"
            call.set_response_json(doc, 409)

    def doc_resp(call: Call) -> None:
        doc = _openapi_without_atomic(call.response_json())
        op = doc["paths"][PATH]["post"]
        op.setdefault("parameters", []).append(
            {"name": "mode", "in": "query", "required": False, "schema": {"enum": ["atomic"]},
             "description": "`atomic`: all-or-nothing"})
        # The failure is answered 409: the document says so (beside the key-in-use error).
        conflict = op["responses"]["409"]["content"]["application/json"]
        conflict["schema"] = {"anyOf": [{"$ref": "#/components/schemas/BatchResponse/$defs/atomic_failure"},
                                        conflict["schema"]]}
        call.set_response_json(doc)
    return Rewrite(Rewrite(app, path=PATH, request=req, response=resp), method="GET", path="/openapi.json",
                   response=doc_resp)


# -- round 7: write-time failures and the explicit "off" selector (docs/kill-matrix.md) --------------

def _only_write_time_conflicts(doc: Any) -> bool:
    """A failed atomic batch whose only failing items failed at INSERT (their id exists): validation
    passed for every item, so the reference's answer came from the store's unique-key violation."""
    if not (isinstance(doc, dict) and doc.get("status") == "failed" and isinstance(doc.get("results"), list)):
        return False
    codes = [(r.get("error") or {}).get("code") for r in doc["results"] if isinstance(r, dict)]
    real = [c for c in codes if c != "not_applied"]
    return bool(real) and all(c == "already_exists" for c in real)


@mutant("ATOM-02", "a unique-key clash found at INSERT in an atomic batch is rolled back and answered 409 "
                   "{\"error\": \"conflict\", \"message\": \"UNIQUE constraint failed ...\"}: the store's error, no "
                   "per-item results (validation failures are answered properly)",
        also=["ATOM-03"], may_also=["ROB-01"],
        check="test_write_time_failure_names_the_failing_item")
def write_time_conflict_batch_level(app):
    def resp(call: Call) -> None:
        if _only_write_time_conflicts(call.response_json()):
            call.set_response_json({"error": "conflict",
                                    "message": "UNIQUE constraint failed: orders.client, orders.id"}, 409)
    return _rewrite(app, None, resp)


@mutant("ATOM-03", "a unique-key clash found at INSERT in an atomic batch: the answer lists what the insert loop "
                   "collected, the items inserted before the clash reported ok with data although the "
                   "transaction was rolled back", check="test_write_time_failure_says_not_applied")
def write_time_conflict_reports_written_ok(app):
    def req(call: Call) -> None:
        doc = call.json()
        call.state["items"] = doc["operations"] if _is_atomic(doc) else []

    def resp(call: Call) -> None:
        doc = call.response_json()
        if _only_write_time_conflicts(doc):
            by_id = {i.get("id"): i for i in call.state.get("items", []) if isinstance(i, dict)}
            doc["results"] = [r if r["error"]["code"] != "not_applied" else
                              {"id": r["id"], "status": "ok", "data": dict(by_id.get(r["id"], {}), version=1)}
                              for r in doc["results"]]
            call.set_response_json(doc)
    return _rewrite(app, req, resp)


@mutant("ATOM-05", "the atomic selector is read by presence, not value (`if \"atomic\" in body`): a request that "
                   "says \"atomic\": false explicitly is processed all-or-nothing",
        check="test_atomic_selector_false_is_not_atomic")
def atomic_false_is_atomic(app):
    def req(call: Call) -> None:
        doc = call.json()
        if isinstance(doc, dict) and doc.get("atomic") is False:
            doc["atomic"] = True
            call.set_json(doc)
    return _rewrite(app, req, None)
