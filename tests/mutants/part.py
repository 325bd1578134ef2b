"""Mutants of class PART: partial failure. Some patch the store behind the responses, as real bugs do."""
from __future__ import annotations

from typing import Any

from ._base import Call, client_of, mutant, on_batch_response

VALIDATION = ("invalid_", "missing_field", "unknown_field")
# The reference's item errors decided against the store, after validation passed (reference_server/batch.py).
WRITE_TIME = ("already_exists", "parent_not_found", "dependency_failed")


def _db(app: Any):
    """The reference app's SQLite store (the wrapped app is always the reference server here)."""
    return app.state.service.storage


def _results(call: Call) -> list[dict[str, Any]]:
    doc = call.response_json()
    return [r for r in ((doc.get("results") if isinstance(doc, dict) else None) or []) if isinstance(r, dict)]


def _items(call: Call) -> dict[str, dict[str, Any]]:
    doc = call.json()
    ops = doc.get("operations") if isinstance(doc, dict) else None
    return {op["id"]: op for op in (ops if isinstance(ops, list) else []) if isinstance(op, dict)
            and isinstance(op.get("id"), str)}


def _is_validation(code: Any) -> bool:
    return isinstance(code, str) and code.startswith(VALIDATION)


@mutant("PART-01", "when any item fails, the transaction is rolled back but the valid items still say ok",
        also=["PART-04", "IDEM-07", "ORD-01"], errors=["IDEM-01", "IDEM-06"],
        check="test_valid_items_of_mixed_batch_are_applied")
def rolls_back_mixed_batch(app):
    store = _db(app)

    def fn(call: Call) -> None:
        res = _results(call)
        if call.status == 200 and any(r.get("status") == "error" for r in res):
            ok = [r["id"] for r in res if r.get("status") == "ok"]
            conn = store.connection()
            conn.executemany("DELETE FROM orders WHERE client = ? AND id = ?", [(client_of(call), i) for i in ok])
    return on_batch_response(fn)(app)


@mutant("PART-01", "valid items that come after the first invalid item are reported ok but never written",
        also=["PART-04", "IDEM-07", "ORD-01"], errors=["IDEM-01", "IDEM-06"],
        check="test_valid_items_of_mixed_batch_are_applied")
def stops_writing_after_first_error(app):
    store = _db(app)

    def fn(call: Call) -> None:
        res = _results(call)
        first = next((k for k, r in enumerate(res) if r.get("status") == "error"), None)
        if call.status == 200 and first is not None:
            late = [r["id"] for r in res[first:] if r.get("status") == "ok"]
            store.connection().executemany("DELETE FROM orders WHERE client = ? AND id = ?",
                                           [(client_of(call), i) for i in late])
    return on_batch_response(fn)(app)


@mutant("PART-02", "an item with an invalid value is inserted before validation rejects it (half-written row)",
        also=["PART-04", "ORD-01", "ORD-03", "ROB-02"], check="test_failed_items_are_not_readable")
def half_writes_invalid_items(app):
    store = _db(app)

    def fn(call: Call) -> None:
        items = _items(call)
        rows = []
        for r in _results(call):
            if r.get("status") == "error" and _is_validation((r.get("error") or {}).get("code")):
                it = items.get(r["id"], {})
                rows.append((client_of(call), r["id"], it.get("amount", 0), str(it.get("currency", "")), None, None, 1,
                             "1970-01-01T00:00:00.000Z"))
        if rows:
            store.connection().executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return on_batch_response(fn)(app)


@mutant("PART-02", "an item whose id already exists overwrites the stored order before failing with already_exists",
        check="test_failed_item_leaves_existing_resource_untouched")
def conflict_overwrites(app):
    store = _db(app)

    def fn(call: Call) -> None:
        items = _items(call)
        for r in _results(call):
            if r.get("status") == "error" and (r.get("error") or {}).get("code") == "already_exists":
                it = items.get(r["id"], {})
                store.connection().execute("UPDATE orders SET amount = ?, currency = ?, note = ? WHERE client = ? AND id = ?",
                                           (it.get("amount"), it.get("currency"), it.get("note"), client_of(call), r["id"]))
    return on_batch_response(fn)(app)


@mutant("PART-03", "every invalid item gets the generic code 'validation_error'",
        also=["PAR-02"],
        check="test_item_error_names_code_and_field")
def generic_item_code(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        changed = False
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            err = r.get("error") if isinstance(r, dict) else None
            if isinstance(err, dict) and _is_validation(err.get("code")):
                err["code"] = "validation_error"
                changed = True
        if changed:
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-03", "item error messages say only 'invalid item', naming no field",
        check="test_item_error_names_code_and_field")
def vague_item_message(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        res = doc.get("results") if isinstance(doc, dict) else None
        changed = False
        for r in res or []:
            err = r.get("error") if isinstance(r, dict) else None
            if isinstance(err, dict) and _is_validation(err.get("code")):
                err["message"] = "invalid item"
                err.pop("field", None)
                changed = True
        if changed:
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-04", "the id of a failed item stays reserved: resubmitting it corrected gets already_exists",
        check="test_resubmitting_corrected_failures")
def failed_ids_reserved(app):
    store = _db(app)
    reserved: set[tuple[str, str]] = set()

    def fn(call: Call) -> None:
        doc = call.response_json()
        client = client_of(call)
        changed = False
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            key = (client, r.get("id"))
            if r.get("status") == "error" and _is_validation((r.get("error") or {}).get("code")):
                reserved.add(key)
            elif r.get("status") == "ok" and key in reserved:
                store.connection().execute("DELETE FROM orders WHERE client = ? AND id = ?", key)
                r.pop("data", None)
                r.update({"status": "error", "error": {
                    "code": "already_exists", "message": f"an order with id '{key[1]}' already exists",
                    "field": "id", "retryable": False}})
                changed = True
        if changed:
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-04", "a batch holding ids that failed last time is taken as a retry: the previous batch's "
        "succeeded items are applied again", check="test_resubmitting_corrected_failures")
def retry_reapplies_previous_batch(app):
    store = _db(app)
    last: dict[str, tuple[set[str], list[str]]] = {}

    def fn(call: Call) -> None:
        client = client_of(call)
        res = _results(call)
        if call.status != 200 or not res:
            return
        if (dict((k.lower(), v) for k, v in call.response_headers).get(b"idempotent-replayed") == b"true"):
            return  # a replay is the stored answer: the batch did not run, nor did its retry detection
        failed_before, ok_before = last.get(client, (set(), []))
        if failed_before & {r.get("id") for r in res}:
            store.connection().executemany("UPDATE orders SET version = version + 1 WHERE client = ? AND id = ?",
                                           [(client, i) for i in ok_before])
        last[client] = ({r["id"] for r in res if r.get("status") == "error"},
                        [r["id"] for r in res if r.get("status") == "ok"])
    return on_batch_response(fn)(app)


@mutant("PART-05", "a one-item batch takes a legacy path that reports validation errors as 'invalid_request'",
        check="test_item_result_independent_of_batch")
def single_item_batch_generic_code(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        res = _results(call)
        if call.status == 200 and len(res) == 1 and _is_validation((res[0].get("error") or {}).get("code")):
            doc["results"][0]["error"]["code"] = "invalid_request"
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-06", "item errors carry no retryable flag", check="test_error_results_say_whether_retry_can_succeed")
def no_retryable_flag(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            if isinstance(r, dict) and isinstance(r.get("error"), dict):
                r["error"].pop("retryable", None)
        if isinstance(doc, dict):
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-06", "errors found when an item is written (its id already exists, its parent is missing, a dependency "
        "failed) come from the store's code path, which leaves out the retryable flag; validation errors keep it",
        check="test_error_results_say_whether_retry_can_succeed")
def write_time_errors_without_retryable(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        changed = False
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            err = r.get("error") if isinstance(r, dict) else None
            if isinstance(err, dict) and err.get("code") in WRITE_TIME:
                changed = err.pop("retryable", None) is not None or changed
        if changed:
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-06", "every item error says retryable: true, validation errors included",
        check="test_error_results_say_whether_retry_can_succeed")
def everything_retryable(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            if isinstance(r, dict) and isinstance(r.get("error"), dict):
                r["error"]["retryable"] = True
        if isinstance(doc, dict):
            call.set_response_json(doc)
    return on_batch_response(fn)(app)



@mutant("PART-04", "an upserting store: an id that already exists is applied again (version bumped) and answered ok",
        # ATOM-02 (full matrix): in a rolled-back atomic batch the clashing item, the one that made it
        # fail, is answered ok, so the answer does not identify the failing item
        also=["ATOM-02"],
        check="test_resubmitting_the_whole_batch_corrected_applies_nothing_twice")
def existing_ids_reapplied(app):
    store = _db(app)

    def fn(call: Call) -> None:
        doc = call.response_json()
        client = client_of(call)
        changed = False
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            if r.get("status") == "error" and (r.get("error") or {}).get("code") == "already_exists":
                store.connection().execute("UPDATE orders SET version = version + 1 WHERE client = ? AND id = ?",
                                           (client, r.get("id")))
                r.pop("error", None)
                r.update({"status": "ok", "data": {"id": r.get("id")}})
                changed = True
        if changed:
            if isinstance(doc.get("summary"), dict):  # its counts agree with the answer it gives (CORE-08)
                ok = sum(1 for r in doc["results"] if r.get("status") == "ok")
                doc["summary"].update(succeeded=ok, failed=len(doc["results"]) - ok)
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PART-01", "an error-rate breaker: when more than half of a batch's items fail, the valid items' writes "
        "are abandoned (rolled back) but their results still say ok", also=["PART-04"],
        check="test_valid_item_of_mostly_failing_batch_is_applied")
def abandons_mostly_failing_batch(app):
    store = _db(app)

    def fn(call: Call) -> None:
        res = _results(call)
        if call.status == 200 and sum(1 for r in res if r.get("status") == "error") * 2 > len(res):
            ok = [r["id"] for r in res if r.get("status") == "ok"]
            store.connection().executemany("DELETE FROM orders WHERE client = ? AND id = ?",
                                           [(client_of(call), i) for i in ok])
    return on_batch_response(fn)(app)
