"""Mutants of class SIZE: item-count and byte limits, empty batches."""
from __future__ import annotations

import dataclasses
import types
from typing import Any

from reference_server.errors import PAYLOAD_TOO_LARGE, ApiError

from ._base import Call, client_of, Rewrite, mutant, on_batch_response, variation


def _service(app: Any) -> Any:
    return app.state.service


def _relimit(app: Any, **limits: int) -> Any:
    svc = _service(app)
    svc.settings = dataclasses.replace(svc.settings, **limits)
    return app


def _ops(call: Call) -> list | None:
    doc = call.json()
    ops = doc.get("operations") if isinstance(doc, dict) else None
    return ops if isinstance(ops, list) else None


@mutant("SIZE-01", "the item limit is not enforced: an over-limit batch is processed",
        check="test_over_max_items_rejected")
def item_limit_not_enforced(app):
    return _relimit(app, max_items=10**6)


@mutant("SIZE-01", "an over-limit batch is refused with the code 'too_many_items'",
        check="test_over_max_items_rejected")
def wrong_too_large_code(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("error") == "batch_too_large":
            doc["error"] = "too_many_items"
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("SIZE-01", "the batch_too_large message names neither the limit nor the count",
        check="test_over_max_items_rejected")
def vague_too_large_message(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("error") == "batch_too_large":
            call.set_response_json({"error": "batch_too_large", "message": "Too many items in the batch"})
    return on_batch_response(fn)(app)


@mutant("SIZE-01", "the first max_items items are applied, then the batch is refused as too large",
        check="test_over_max_items_rejected")
def applies_up_to_the_limit(app):
    limit = _service(app).settings.max_items

    def req(call: Call) -> None:
        doc = call.json()
        ops = _ops(call)
        if ops is not None and len(ops) > limit and not doc.get("atomic"):
            call.state["received_items"] = len(ops)  # per exchange (Call.state), never per server
            doc["operations"] = ops[:limit]
            call.set_json(doc)

    def resp(call: Call) -> None:
        received = call.state.get("received_items")
        if received is not None and call.status == 200:
            call.set_response_json({"error": "batch_too_large",
                                    "message": f"Maximum {limit} items per batch; received {received}"}, 413)
    return Rewrite(app, request=req, response=resp)


@mutant("SIZE-02", "off by one: a batch of exactly max_items is refused as too large",
        check="test_exactly_max_items_processed")
def exact_limit_refused(app):
    limit = _service(app).settings.max_items

    # The refusal comes before anything is applied (a `>=` where `>` was meant, in the size check): the
    # items never reach the store, as in a real server, so a later batch of some of them is fresh.
    def req(call: Call) -> None:
        doc = call.json()
        ops = _ops(call)
        if ops is not None and len(ops) == limit and not doc.get("atomic"):
            call.state["received_items"] = len(ops)
            doc["operations"] = []
            call.set_json(doc)

    def resp(call: Call) -> None:
        received = call.state.get("received_items")
        if received is not None:
            call.set_response_json({"error": "batch_too_large",
                                    "message": f"Maximum {limit} items per batch; received {received}"}, 413)
    return Rewrite(app, request=req, response=resp)


@mutant("SIZE-02", "off by one in the loop: the last item of a full batch is silently dropped",
        check="test_exactly_max_items_processed",
        # IDEM-03 grows its batch until its duplicates overlap, up to the largest size accepted: when
        # it reaches max_items (timing) it sees the dropped item unreadable, a true FAIL here.
        may_also=["IDEM-03"],
        # CORE's large mixed batch is limits.max_items items: its answer is one result short.
        also=["CORE-02"])
def full_batch_drops_last(app):
    limit = _service(app).settings.max_items

    def fn(call: Call) -> None:
        doc = call.json()
        ops = _ops(call)
        if ops is not None and len(ops) == limit:
            doc["operations"] = ops[:-1]
            call.set_json(doc)
    return Rewrite(app, request=fn)


@mutant("SIZE-02", "a large batch is written in chunks of 128 with an off-by-one slice: the last item of every "
        "full chunk is reported ok but never stored", check="test_exactly_max_items_processed")
def chunk_edges_lost(app):
    storage = _service(app).storage

    def fn(call: Call) -> None:
        doc = call.response_json()
        res = [r for r in (doc.get("results") or []) if isinstance(r, dict)] if isinstance(doc, dict) else []
        if call.status != 200 or len(res) < 128:
            return
        lost = [res[k]["id"] for k in range(127, (len(res) // 128) * 128, 128) if res[k].get("status") == "ok"]
        storage.connection().executemany("DELETE FROM orders WHERE client = ? AND id = ?",
                                         [(client_of(call), i) for i in lost])
    return on_batch_response(fn)(app)


@mutant("SIZE-03", "the byte limit is not enforced: an over-limit body is parsed and processed",
        check="test_over_max_bytes_gets_413_in_process")
def byte_limit_not_enforced(app):
    return _relimit(app, max_bytes=10**9)


@mutant("SIZE-03", "an over-limit body gets 413 with an empty body", check="test_over_max_bytes_gets_413_in_process")
def bare_413(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 413 and isinstance(doc, dict) and doc.get("error") == "payload_too_large":
            call.response_body = b""
            call.set_response_header("content-type", None)
    return on_batch_response(fn)(app)


def _read_all(refuse_after: bool):
    """A replacement of Service.body that reads the whole stream before (or instead of) checking the limit."""
    async def body(self: Any, request: Any) -> bytes:
        from reference_server.app import require_json
        from reference_server._body import read_body

        require_json(request)
        chunked = request.headers.get("content-length") is None
        if not (chunked or refuse_after):
            return await read_body(request, self.settings.max_bytes)
        data = b"".join([c async for c in request.stream()])
        if refuse_after and len(data) > self.settings.max_bytes:
            raise ApiError(413, PAYLOAD_TOO_LARGE, f"request body exceeds {self.settings.max_bytes} bytes",
                           headers={"Connection": "close"})
        return data
    return body


@mutant("SIZE-03", "only Content-Length is checked: a chunked body of any size is read and processed", socket=True,
        check="test_over_max_bytes_refused_while_streaming")
def chunked_limit_not_enforced(app):
    svc = _service(app)
    svc.body = types.MethodType(_read_all(refuse_after=False), svc)
    return app


@mutant("SIZE-03", "the whole body is buffered before its size is checked: 413 only after the last byte", socket=True,
        also=["ROB-02"],
        check="test_over_max_bytes_refused_while_streaming")
def refuses_after_reading_everything(app):
    svc = _service(app)
    svc.body = types.MethodType(_read_all(refuse_after=True), svc)
    return app


@mutant("SIZE-03", "the byte limit is checked on the decoded text's length in characters (a JavaScript "
        "body.length): a body over the limit in bytes but under it in characters is processed",
        check="test_over_max_bytes_gets_413_in_process")
def limit_counts_characters(app):
    return _counts_characters(app)


@mutant("SIZE-03", "over a socket: the byte limit is checked on the decoded text's length in characters, so a "
        "body over the limit in bytes but under it in characters is processed", socket=True,
        check="test_over_max_bytes_in_bytes_not_characters")
def limit_counts_characters_over_a_socket(app):
    return _counts_characters(app)


def _counts_characters(app):
    svc = _service(app)
    limit = svc.settings.max_bytes

    async def body(self: Any, request: Any) -> bytes:
        from reference_server.app import require_json

        from reference_server._body import read_body

        require_json(request)
        data = await read_body(request, 4 * limit)  # the reference's reader (its idle timeout); 4 bytes a character at most
        if len(data.decode("utf-8", "replace")) > limit:
            raise ApiError(413, PAYLOAD_TOO_LARGE, f"request body exceeds {limit} bytes")
        return data
    svc.body = types.MethodType(body, svc)
    return app


def _openapi_items(call: Call) -> tuple[Any, dict | None]:
    doc = call.response_json()
    try:
        return doc, doc["components"]["schemas"]["BatchRequest"]["properties"]["operations"]
    except (KeyError, TypeError):
        return doc, None


@mutant("SIZE-04", "the OpenAPI document states maxItems 5000 while the server refuses over 1000",
        check="test_limits_discoverable")
def openapi_wrong_max_items(app):
    def fn(call: Call) -> None:
        doc, ops = _openapi_items(call)
        if ops is not None:
            ops["maxItems"] = 5000
            call.set_response_json(doc)
    return on_batch_response(fn, path="/openapi.json", method="GET")(app)


@mutant("SIZE-04", "no maxItems in the OpenAPI document and no numbers in the batch_too_large message",
        also=["SIZE-01"], check="test_limits_discoverable")
def limit_undiscoverable(app):
    def doc_fn(call: Call) -> None:
        doc, ops = _openapi_items(call)
        if ops is not None:
            ops.pop("maxItems", None)
            call.set_response_json(doc)
    return on_batch_response(doc_fn, path="/openapi.json", method="GET")(vague_too_large_message(app))


@mutant("SIZE-05", "an empty batch crashes the server (500)", check="test_empty_batch_clear_answer")
def empty_batch_500(app):
    def fn(call: Call) -> None:
        if _ops(call) == []:
            call.set_response_json({"error": "internal_error", "message": "list index out of range"}, 500)
    return on_batch_response(fn)(app)


@mutant("SIZE-05", "an empty batch gets 400 with the generic code 'invalid_body'",
        check="test_empty_batch_clear_answer")
def empty_batch_generic_400(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("error") == "batch_empty":
            doc["error"] = "invalid_body"
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@variation("batch_too_large answered 400 instead of 413 (both legal)", classes=["SIZE", "HTTP"])
def too_large_as_400(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 413 and isinstance(doc, dict) and doc.get("error") == "batch_too_large":
            call.status = 400
    return on_batch_response(fn)(app)


@variation("an empty batch answered 200 with no results (legal)", classes=["SIZE", "HTTP"])
def empty_batch_200(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("error") == "batch_empty":
            call.set_response_json({"results": [], "summary": {"total": 0, "succeeded": 0, "failed": 0}}, 200)
    return on_batch_response(fn)(app)


@mutant("SIZE-04", "the OpenAPI document states the right maxItems, but the over-limit error does not name the limit",
        also=["SIZE-01"], check="test_limits_discoverable")
def limit_only_in_openapi(app):
    return vague_too_large_message(app)


# -- round 7: limits and empty batches on the atomic and async paths (docs/kill-matrix.md) ------------

@mutant("SIZE-01", "the atomic path checks the sync item limit (1,000) instead of its own (100): a 101-item atomic "
        "batch is applied whole", check="test_over_max_items_rejected")
def atomic_limit_not_enforced(app):
    svc = _service(app)
    return _relimit(app, atomic_max_items=svc.settings.max_items)


@mutant("SIZE-01", "the async endpoint enforces no item limit: a job of async_max_items + 1 items is accepted "
        "(202) and run", check="test_over_max_items_rejected")
def async_limit_not_enforced(app):
    return _relimit(app, async_max_items=10**6)


def _empty_500(app, path: str, atomic_only: bool):
    """The empty list reaches code that assumes at least one item (divides by the count, indexes the
    first item): a 500 where the batch endpoint answers 400 batch_empty."""
    def req(call: Call) -> None:
        doc = call.json()
        call.state["empty"] = (isinstance(doc, dict) and doc.get("operations") == []
                               and (not atomic_only or doc.get("atomic") is True))

    def resp(call: Call) -> None:
        if call.state.get("empty"):
            call.set_response_json({"error": "internal_error", "message": "internal server error"}, 500)
    return Rewrite(app, path=path, request=req, response=resp)


@mutant("SIZE-05", "an empty atomic batch ({\"operations\": [], \"atomic\": true}) crashes the atomic path (500); "
        "the plain batch endpoint answers 400 batch_empty", check="test_empty_batch_clear_answer")
def atomic_empty_batch_500(app):
    return _empty_500(app, "/orders/batch", atomic_only=True)


@mutant("SIZE-05", "an empty job on the async endpoint crashes it (500); the sync batch endpoint answers 400 "
        "batch_empty", check="test_empty_batch_clear_answer")
def async_empty_batch_500(app):
    return _empty_500(app, "/imports/batch", atomic_only=False)


class _EmptyJobs:
    """An async endpoint that accepts an empty job (202) as a job of zero items, completed at once and
    readable at its status URL; every other request goes to the reference app."""

    PREFIX = "job_empty_"

    def __init__(self, app: Any):
        self.app = Rewrite(app, path="/imports/batch", request=self._req, response=self._resp)
        self.router = getattr(app, "router", None)

    @staticmethod
    def _req(call: Call) -> None:
        doc = call.json()
        call.state["empty"] = isinstance(doc, dict) and doc.get("operations") == []

    def _resp(self, call: Call) -> None:
        if call.state.get("empty"):
            import uuid

            job_id = self.PREFIX + uuid.uuid4().hex
            url = "/imports/batch/" + job_id
            call.set_response_json({"job_id": job_id, "status_url": url, "status": "completed", "total": 0}, 202)
            call.set_response_header("location", url)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        prefix = "/imports/batch/" + self.PREFIX
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(prefix):
            import json

            job_id = scope["path"].rsplit("/", 1)[-1]
            now = "2026-01-01T00:00:00Z"
            body = json.dumps({"job_id": job_id, "status": "completed", "total": 0, "succeeded": 0, "failed": 0,
                               "pending": 0, "results": [], "next_cursor": None, "status_url": scope["path"],
                               "created_at": now, "updated_at": now, "finished_at": now}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


@variation("an empty job accepted by the async endpoint (202) as a job of zero items that is completed at once "
           "(legal: the async form of 200 with no results)", classes=["SIZE", "ASYNC"])
def async_empty_job_completed(app):
    return _EmptyJobs(app)
