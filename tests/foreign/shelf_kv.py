"""Shelf KV: a key-value store whose batch write answers only the failures, as a map keyed by table
(each failure carrying the item itself, its key nested inside), read back by a POST with the key in
the body. Shaped like DynamoDB's BatchWriteItem / GetItem.

A foreign-envelope fixture: the kit knows nothing of it but its profile (tests/foreign/shelf_kv.yaml,
written from this documentation and docs/any-target.md only).

API documentation
-----------------
Every operation is `POST /` with Content-Type `application/x-shelf-json-1.0` and a header
`X-Shelf-Op` naming the operation. Items are typed attribute maps:
`{"key": {"S": "<key>"}, "qty": {"N": "<decimal integer>"}, "note"?: {"S": str}}`. One table exists: `shelf`.

X-Shelf-Op: BatchPut
    Body: {"Writes": {"shelf": [{"Put": {"Item": item}}, ...]}}: 1 to 25 writes, at most 32768 bytes.
    Writes are independent: each is stored or refused on its own.
    200 {"Unprocessed": {"shelf": [failure, ...]}, "UnprocessedCount": n}: only the refused writes are
        listed (every write not listed was stored); "Unprocessed" is {} when none was refused.
        failure: {"Put": {"Item": item as sent}, "Error": {"Code": str, "Message": str, "Retryable": false}}
        codes: InvalidItem (qty missing, or not a decimal integer string in 1..1000000; note not a string
        of at most 1000 characters; key over 200 characters), KeyExists (the key is stored already).
    Batch-level errors: {"__type": "shelf#<Code>", "message": str}:
        400 SerializationException (not JSON, NaN/Infinity, nesting over 32 levels),
        400 ValidationException (Writes missing or not a map of lists; a write without Put.Item.key.S;
            an unknown table), 400 DuplicateKeys (a key twice in one batch, named; nothing stored),
        400 EmptyBatch (no writes), 413 TooManyWrites ("at most 25 writes; got N"),
        413 RequestTooLarge (over 32768 bytes), 415 UnsupportedMediaType,
        400 UnknownOperation (X-Shelf-Op missing or unknown).
X-Shelf-Op: AtomicPut (all or nothing)
    Body and limits as BatchPut. Every write is checked (InvalidItem, KeyExists) before any is stored.
    200 {"Unprocessed": {}, "UnprocessedCount": 0}: every write stored.
    400 {"__type": "shelf#TransactionCanceled", "message": str, "Status": "failed",
         "Unprocessed": {"shelf": [failure, ...]}}: nothing stored; the refused writes are listed.
X-Shelf-Op: GetItem
    Body: {"Table": "shelf", "Key": {"key": {"S": "<key>"}}}: 200 {"Item": item}, or 200 {} when no
    item has that key.
X-Shelf-Op: PutItem (one write)
    Body: {"Table": "shelf", "Put": {"Item": item}}: 200 {"Attributes": item}, or a batch-level error
    (400 InvalidItem, 400 KeyExists).
"""
from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import loads_strict, nests_deeper

MAX_WRITES = 25
MAX_BYTES = 32768
MAX_DEPTH = 32
CTYPE = "application/x-shelf-json-1.0"

BUGS = {
    "drops_failure": "CORE-02", "invents_failure": "CORE-02", "lists_failure_twice": "CORE-02",
    "fake_ok": "HTTP-03", "phantom_reads": "PART-02", "no_write_limit": "SIZE-01",
    "refuses_whole_batch": "HTTP-01", "writes_behind_4xx": "CORE-07", "wrong_unprocessed_count": "CORE-08",
    "crashes_on_nesting": "ROB-02", "stores_refused": "PART-02", "atomic_keeps_written": "ATOM-01",
}
# Issue 13's list of defects (see tally_rpc.COVERS): kind -> BUGS entry, or why the shape has none.
COVERS = {"dropped result": "drops_failure", "invented result": "invents_failure", "fake ok": "fake_ok",
          "phantom reads": "phantom_reads", "unenforced limit": "no_write_limit",
          "one bad item refuses the batch": "refuses_whole_batch", "valid items written behind a 4xx": "writes_behind_4xx",
          "wrong failure count": "wrong_unprocessed_count", "crash on a hostile body": "crashes_on_nesting"}
VARIATIONS = {
    "reversed_failures": "failures listed in reverse order, still carrying their items",
    "too_many_as_400": "more than 25 writes answered 400 instead of 413",
    "missing_as_404": "GetItem answers 404 for a missing key instead of 200 {}",
    "failures_by_code": "Unprocessed keyed by error code instead of table name",
    "omits_empty": "Unprocessed left out when no write was refused",
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"__type": f"shelf#{code}", "message": message}, status_code=status,
                        media_type=CTYPE)


def _answer(doc: Any) -> JSONResponse:
    return JSONResponse(doc, media_type=CTYPE)


def _key(write: Any) -> str | None:
    try:
        key = write["Put"]["Item"]["key"]["S"]
    except (KeyError, TypeError):
        return None
    return key if isinstance(key, str) and key else None


def _problem(item: dict[str, Any]) -> str | None:
    qty = item.get("qty")
    n = qty.get("N") if isinstance(qty, dict) else None
    if not isinstance(n, str) or not n.isdigit() or not 1 <= int(n) <= 1_000_000:
        return "qty must be {\"N\": \"<integer 1..1000000>\"}"
    note = item.get("note", {"S": ""})
    if not isinstance(note, dict) or not isinstance(note.get("S"), str) or len(note["S"]) > 1000:
        return "note must be {\"S\": \"<at most 1000 characters>\"}"
    key = item["key"]["S"]
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "key must be valid UTF-8"
    if len(key) > 200:
        return "key must be at most 200 characters"
    return None


def create_app(bugs: frozenset[str] = frozenset()) -> Starlette:
    store: dict[str, dict[str, Any]] = {}

    async def body_of(request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != CTYPE:
            return _error(415, "UnsupportedMediaType", f"send {CTYPE}, not {ctype or 'nothing'}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BYTES:
                return _error(413, "RequestTooLarge", f"the body is over {MAX_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
            if "crashes_on_nesting" in bugs and text.count("[") + text.count("{") > 1000:
                raise RuntimeError("stack overflow")  # the planted crash: a 500
            doc = loads_strict(text)
        except (ValueError, RecursionError, UnicodeDecodeError):
            return _error(400, "SerializationException", "the body is not JSON")
        if nests_deeper(doc, MAX_DEPTH):
            return _error(400, "SerializationException", f"the body nests deeper than {MAX_DEPTH} levels")
        if not isinstance(doc, dict):
            return _error(400, "ValidationException", "the body is a JSON object")
        return doc

    def batch_put(doc: dict[str, Any], atomic: bool = False) -> JSONResponse:
        writes = doc.get("Writes")
        if not isinstance(writes, dict) or not all(isinstance(v, list) for v in writes.values()):
            return _error(400, "ValidationException", "Writes is a map of table name to a list of writes")
        if any(t != "shelf" for t in writes):
            return _error(400, "ValidationException", f"no table {sorted(t for t in writes if t != 'shelf')[0]}")
        batch = writes.get("shelf") or []
        if not batch:
            return _error(400, "EmptyBatch", "send at least one write")
        if len(batch) > MAX_WRITES and "no_write_limit" not in bugs:
            return _error(400 if "too_many_as_400" in bugs else 413, "TooManyWrites",
                          f"at most {MAX_WRITES} writes; got {len(batch)}")
        keys: list[str] = []
        for write in batch:
            key = _key(write)
            if key is None:
                return _error(400, "ValidationException", "every write is {\"Put\": {\"Item\": {\"key\": {\"S\": ...}}}}")
            keys.append(key)
        twins = sorted({k for k in keys if keys.count(k) > 1})
        if twins:
            if "writes_behind_4xx" in bugs:
                for write, key in zip(batch, keys):
                    if key not in twins and _problem(write["Put"]["Item"]) is None:
                        store.setdefault(key, write["Put"]["Item"])
            return _error(400, "DuplicateKeys", f"key {twins[0]} appears twice; nothing was stored")
        problems = [_problem(w["Put"]["Item"]) for w in batch]
        if atomic:
            return atomic_put(batch, keys, problems)
        if "refuses_whole_batch" in bugs and any(problems):
            return _error(400, "ValidationException", "a write is invalid; nothing was stored")
        failures: list[dict[str, Any]] = []
        for write, key, problem in zip(batch, keys, problems):
            item = write["Put"]["Item"]
            if problem is not None:
                if "stores_refused" in bugs:
                    store.setdefault(key, item)
                if "fake_ok" not in bugs:
                    failures.append({"Put": {"Item": item},
                                     "Error": {"Code": "InvalidItem", "Message": problem, "Retryable": False}})
            elif key in store:
                failures.append({"Put": {"Item": item}, "Error": {"Code": "KeyExists",
                                                                  "Message": f"key {key} is stored already",
                                                                  "Retryable": False}})
            else:
                store[key] = item
        count = len(failures)
        if "drops_failure" in bugs and len(failures) > 1:
            failures.pop()
        if "invents_failure" in bugs:
            failures.append({"Put": {"Item": {"key": {"S": "shelf-invented-1"}, "qty": {"N": "1"}}},
                             "Error": {"Code": "InvalidItem", "Message": "qty", "Retryable": False}})
        if "lists_failure_twice" in bugs:
            failures = [f for f in failures for _ in (0, 1)]
        if "reversed_failures" in bugs:
            failures.reverse()
        if "wrong_unprocessed_count" in bugs:
            count = 0
        if "failures_by_code" in bugs:
            unprocessed: dict[str, list[Any]] = {}
            for f in failures:
                unprocessed.setdefault(f["Error"]["Code"], []).append(f)
        else:
            unprocessed = {"shelf": failures} if failures else {}
        out: dict[str, Any] = {"Unprocessed": unprocessed, "UnprocessedCount": count}
        if "omits_empty" in bugs and not unprocessed:
            del out["Unprocessed"]
        return _answer(out)

    def atomic_put(batch: list[Any], keys: list[str], problems: list[str | None]) -> JSONResponse:
        failures = []
        for write, key, problem in zip(batch, keys, problems):
            if problem is None and key in store:
                problem = f"key {key} is stored already"
                code = "KeyExists"
            else:
                code = "InvalidItem"
            if problem is not None:
                failures.append({"Put": {"Item": write["Put"]["Item"]},
                                 "Error": {"Code": code, "Message": problem, "Retryable": False}})
            elif "atomic_keeps_written" in bugs and not failures:
                store[key] = write["Put"]["Item"]  # the planted defect: written one by one, no rollback
        if failures:
            return JSONResponse({"__type": "shelf#TransactionCanceled", "message": "a write was refused; nothing "
                                 "was stored", "Status": "failed", "Unprocessed": {"shelf": failures}},
                                status_code=400, media_type=CTYPE)
        for write, key in zip(batch, keys):
            store[key] = write["Put"]["Item"]
        return _answer({"Unprocessed": {}, "UnprocessedCount": 0})

    def get_item(doc: dict[str, Any]) -> JSONResponse:
        key = (((doc.get("Key") or {}).get("key") or {}).get("S")) if isinstance(doc.get("Key"), dict) else None
        if doc.get("Table") != "shelf" or not isinstance(key, str):
            return _error(400, "ValidationException", "GetItem takes {\"Table\": \"shelf\", \"Key\": {\"key\": {\"S\": ...}}}")
        if key in store:
            return _answer({"Item": store[key]})
        if "phantom_reads" in bugs:
            return _answer({"Item": {"key": {"S": key}, "qty": {"N": "1"}}})
        if "missing_as_404" in bugs:
            return _error(404, "ResourceNotFound", f"no item {key}")
        return _answer({})

    def put_item(doc: dict[str, Any]) -> JSONResponse:
        key = _key(doc)
        if doc.get("Table") != "shelf" or key is None:
            return _error(400, "ValidationException", "PutItem takes {\"Table\": \"shelf\", \"Put\": {\"Item\": ...}}")
        problem = _problem(doc["Put"]["Item"])
        if problem is not None:
            return _error(400, "InvalidItem", problem)
        if key in store:
            return _error(400, "KeyExists", f"key {key} is stored already")
        store[key] = doc["Put"]["Item"]
        return _answer({"Attributes": store[key]})

    operations = {"BatchPut": batch_put, "AtomicPut": lambda doc: batch_put(doc, atomic=True),
                  "GetItem": get_item, "PutItem": put_item}

    async def root(request: Request) -> JSONResponse:
        op = operations.get(request.headers.get("x-shelf-op", ""))
        if op is None:
            return _error(400, "UnknownOperation", "X-Shelf-Op names BatchPut, GetItem or PutItem")
        doc = await body_of(request)
        if isinstance(doc, JSONResponse):
            return doc
        return op(doc)

    return Starlette(routes=[Route("/", root, methods=["POST"])])
