"""Tally RPC: a batch API with bare JSON arrays both ways and JSON-RPC-style numeric error codes.

A foreign-envelope fixture: the kit knows nothing of it but its profile (tests/foreign/tally_rpc.yaml,
written from this documentation and docs/any-target.md only).

API documentation
-----------------
POST /rpc/items:batch   Content-Type: application/json
    Body: a bare JSON array of items `{"key": "<client key>", "qty": <integer >= 1>, "note"?: str}`,
    at most 20 items, at most 65536 bytes. Items are independent.
    200: a bare JSON array, one entry per item, in request order, echoing its key:
        stored:   {"key": k, "result": {...the stored item...}}
        rejected: {"key": k, "error": {"code": <int>, "message": str, "data": {"retryable": false}}}
        item codes: -32602 invalid item (qty missing, not an integer or outside 1..1000000; note not
        a string of at most 1000 characters; key over 200 characters or not UTF-8), -32001 key already stored.
    An empty array gets 200 [].
    Batch-level errors: {"error": {"code": <int>, "message": str}}:
        400 -32700 not JSON (also NaN/Infinity, invalid UTF-8, nesting over 64 levels),
        400 -32600 not an array, or an item that is not an object with a string key,
        400 -32010 a key twice in one batch (named in the message; nothing stored),
        413 -32011 more than 20 items ("at most 20 items; got N"),
        413 -32013 body over 65536 bytes, 415 -32012 not application/json.
GET /rpc/items/{key}     200 the item, 404 {"error": {"code": -32004, "message": "no item <key>"}}
POST /rpc/items          one item (the same object as in a batch): 200 {"item": {...the stored item...}},
                         or {"error": {"code", "message"}}: 400 -32602 invalid item, 409 -32001 key already
                         stored, 400 -32600 not an object with a string key, 415 -32012.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _Starlette_JSONResponse
from starlette.routing import Route

from . import loads_strict, nests_deeper

MAX_ITEMS = 20
MAX_BYTES = 65536
MAX_DEPTH = 64

BUGS = {
    "drops_result": "CORE-02", "invents_result": "CORE-02", "fake_ok": "HTTP-03", "phantom_reads": "PART-02",
    "no_item_limit": "SIZE-01", "refuses_whole_batch": "HTTP-01", "writes_behind_4xx": "CORE-07",
    "crashes_on_nesting": "ROB-02",
}
# Not in the tables (tests/test_any_target.py uses them): duplicates_per_item answers a repeated key with an
# error result for each twin (legal only where the profile declares envelope.duplicate_ids: per_item);
# failures_by_key answers in the failure-only dialect {"errors": {"<key>": {"code", "message", "data"}}}.
# Issue 13's list of defects every foreign fixture must plant where its shape allows: kind -> the BUGS
# entry that plants it, or why the shape has no such defect (tests/test_foreign_envelopes.py checks it).
COVERS = {"dropped result": "drops_result", "invented result": "invents_result", "fake ok": "fake_ok",
          "phantom reads": "phantom_reads", "unenforced limit": "no_item_limit",
          "one bad item refuses the batch": "refuses_whole_batch", "valid items written behind a 4xx": "writes_behind_4xx",
          "wrong failure count": "n/a: the answer carries no count", "crash on a hostile body": "crashes_on_nesting"}
VARIATIONS = {"reversed_results": "results in reverse order, still echoing their keys",
              "too_many_as_400": "more than 20 items answered 400 instead of 413"}


class JSONResponse(_Starlette_JSONResponse):
    """JSON with non-ASCII escaped: a key holding a lone surrogate (valid JSON) is echoed back intact."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(bugs: frozenset[str] = frozenset()) -> Starlette:
    store: dict[str, dict[str, Any]] = {}

    async def batch(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, -32012, f"send application/json, not {ctype or 'nothing'}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BYTES:
                return _error(413, -32013, f"the body is over {MAX_BYTES} bytes")
        text = None
        try:
            text = raw.decode("utf-8")
            if "crashes_on_nesting" in bugs and text.count("[") > 1000:
                raise RuntimeError("stack overflow")  # the planted crash: a 500
            doc = loads_strict(text)
        except (ValueError, RecursionError, UnicodeDecodeError):
            return _error(400, -32700, "the body is not JSON")
        if nests_deeper(doc, MAX_DEPTH):
            return _error(400, -32700, f"the body nests deeper than {MAX_DEPTH} levels")
        if not isinstance(doc, list):
            return _error(400, -32600, "the body must be a JSON array of items")
        if len(doc) > MAX_ITEMS and "no_item_limit" not in bugs:
            return _error(400 if "too_many_as_400" in bugs else 413, -32011,
                          f"at most {MAX_ITEMS} items; got {len(doc)}")
        keys: set[str] = set()
        for item in doc:
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
                return _error(400, -32600, "every item is an object with a string key")
            if item["key"] in keys and "duplicates_per_item" in bugs:
                continue  # answered below: an error result for each twin
            if item["key"] in keys:
                if "writes_behind_4xx" in bugs:
                    for other in doc:
                        if isinstance(other, dict) and other.get("key") != item["key"] and _valid(other):
                            store.setdefault(other["key"], dict(other))
                return _error(400, -32010, f"key {item['key']} appears twice; nothing was stored")
            keys.add(item["key"])
        if "refuses_whole_batch" in bugs and not all(_valid(i) for i in doc):
            return _error(400, -32602, "an item is invalid; nothing was stored")
        out: list[dict[str, Any]] = []
        twins = {k for k in keys if sum(1 for i in doc if i.get("key") == k) > 1}
        for item in doc:
            if item["key"] in twins:
                out.append({"key": item["key"], "error": {"code": -32010, "message": f"key {item['key']} appears "
                                                          "twice in the batch", "data": {"retryable": False}}})
                continue
            if not _valid(item):
                if "fake_ok" in bugs:
                    out.append({"key": item["key"], "result": dict(item)})
                    continue
                out.append({"key": item["key"], "error": {"code": -32602, "message": "qty must be an integer >= 1",
                                                          "data": {"retryable": False}}})
            elif item["key"] in store:
                out.append({"key": item["key"], "error": {"code": -32001, "message": f"key {item['key']} exists",
                                                          "data": {"retryable": False}}})
            else:
                store[item["key"]] = dict(item)
                out.append({"key": item["key"], "result": dict(item)})
        if "failures_by_key" in bugs:  # the failure-only dialect: {"errors": {"<key>": error}}
            errors = {o["key"]: o["error"] for o in out if "error" in o}
            if "drops_result" in bugs and len(errors) > 1:
                errors.pop(next(reversed(errors)))
            if "invents_result" in bugs:
                errors["tally-invented-1"] = {"code": -32602, "message": "qty must be an integer >= 1"}
            return JSONResponse({"errors": errors})
        if "drops_result" in bugs and len(out) > 1:  # a one-item batch keeps its result (the preflight)
            out.pop()
        if "invents_result" in bugs:
            out.append({"key": "tally-invented-1", "result": {}})
        if "reversed_results" in bugs:
            out.reverse()
        return JSONResponse(out)

    async def read(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        await asyncio.sleep(0)
        if key in store:
            return JSONResponse(store[key])
        if "phantom_reads" in bugs:
            return JSONResponse({"key": key, "qty": 1})
        return _error(404, -32004, f"no item {key}")

    async def single(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _error(415, -32012, f"send application/json, not {ctype or 'nothing'}")
        try:
            item = loads_strict(await request.body())
        except (ValueError, RecursionError, UnicodeDecodeError):
            return _error(400, -32700, "the body is not JSON")
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            return _error(400, -32600, "the item is an object with a string key")
        if not _valid(item):
            return _error(400, -32602, "qty must be an integer >= 1")
        if item["key"] in store:
            return _error(409, -32001, f"key {item['key']} exists")
        store[item["key"]] = dict(item)
        return JSONResponse({"item": dict(item)})

    return Starlette(routes=[Route("/rpc/items:batch", batch, methods=["POST"]),
                             Route("/rpc/items", single, methods=["POST"]),
                             Route("/rpc/items/{key}", read, methods=["GET"])])


def _valid(item: dict[str, Any]) -> bool:
    qty, note, key = item.get("qty"), item.get("note", ""), item["key"]
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False  # a lone surrogate is no key
    return (isinstance(qty, int) and not isinstance(qty, bool) and 1 <= qty <= 1_000_000
            and isinstance(note, str) and len(note) <= 1000 and len(key) <= 200)
