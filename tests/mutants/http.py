"""Mutants of class HTTP: status codes and batch-level error bodies."""
from __future__ import annotations

from ._base import Call, client_of, mutant, on_batch_response


def _results(call: Call) -> list:
    doc = call.response_json()
    return (doc.get("results") if isinstance(doc, dict) else None) or []


def _outcomes(call: Call) -> set:
    return {r.get("status") for r in _results(call) if isinstance(r, dict)}


@mutant("HTTP-01", "a batch with any failed item answers 422 (results still in the body)",
        check="test_mixed_batch_gets_2xx", may_also=["ROB-01"], also=["CORE-02", "IDEM-07"],  # a mixed batch refused whole FAILs CORE-02 too
        errors=["CORE-03", "CORE-04", "CORE-05", "CORE-06", "CORE-08", "IDEM-01", "IDEM-06", "ORD-01", "ORD-03", "PAR-02", "PART-01", "PART-02", "PART-03", "PART-04", "PART-05", "PART-06"])
def mixed_batch_422(app):
    def fn(call: Call) -> None:
        if call.status == 200 and _outcomes(call) == {"ok", "error"}:
            call.status = 422
    return on_batch_response(fn)(app)


@mutant("HTTP-01", "a batch with mixed outcomes answers 207 Multi-Status", may_also=["ROB-01"], also=["HTTP-02"],
        check="test_mixed_batch_gets_2xx")
def mixed_batch_207(app):
    def fn(call: Call) -> None:
        if call.status == 200 and _outcomes(call) == {"ok", "error"}:
            call.status = 207
    return on_batch_response(fn)(app)


@mutant("HTTP-02", "a failed atomic batch answers 207 Multi-Status with its per-item results",
        may_also=["ROB-01"], also=["ATOM-03"],
        check="test_no_batch_response_is_207")
def atomic_failure_207(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            call.status = 207
    return on_batch_response(fn)(app)


@mutant("HTTP-03", "a batch whose items all fail validation answers 422 instead of 200",
        may_also=["ROB-01"],
        also=["IDEM-07"],  # its one-item batch reusing an item key is all invalid: 422, not a per-item error
        errors=["PART-05"],
        check="test_all_invalid_batch_gets_2xx_with_item_errors")
def all_invalid_422(app):
    def fn(call: Call) -> None:
        if call.status == 200 and _outcomes(call) == {"error"}:
            call.status = 422
    return on_batch_response(fn)(app)


@mutant("HTTP-04", "malformed JSON crashes the parser: 500 internal error",
        may_also=["ROB-01"], also=["ROB-02"],
        check="test_unparseable_batches_get_400_json")
def malformed_json_500(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "malformed_json":
            call.set_response_json({"error": "internal_error", "message": "internal server error"}, 500)
    return on_batch_response(fn)(app)


@mutant("HTTP-04", "an 'operations' member that is not an array crashes the server (500)",
        also=["ROB-02"],
        check="test_unparseable_batches_get_400_json")
def non_array_items_500(app):
    def fn(call: Call) -> None:
        req = call.json()
        if call.status == 400 and isinstance(req, dict) and "operations" in req and not isinstance(req["operations"], list):
            call.set_response_json({"error": "internal_error", "message": "'str' object has no attribute 'get'"}, 500)
    return on_batch_response(fn)(app)


@mutant("HTTP-04", "a body with no 'operations' member is taken as a no-op: 200 with no results",
        check="test_unparseable_batches_get_400_json")
def missing_items_is_noop(app):
    def fn(call: Call) -> None:
        req = call.json()
        if call.status == 400 and isinstance(req, dict) and "operations" not in req:
            call.set_response_json({"results": [], "summary": {"total": 0, "succeeded": 0, "failed": 0}}, 200)
    return on_batch_response(fn)(app)


@mutant("HTTP-04", "a non-object JSON body gets the framework's HTML 400 page",
        # Found by ROB-01 too when its bounded fuzzing sends such a body (it documents only JSON 400s).
        may_also=["ROB-01"],
        check="test_unparseable_batches_get_400_json")
def non_object_html_400(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "invalid_body" \
                and not isinstance(call.json(), dict):
            call.response_body = b"<html><body><h1>400 Bad Request</h1></body></html>"
            call.set_response_header("content-type", "text/html")
    return on_batch_response(fn)(app)


@mutant("HTTP-05", "malformed JSON gets problem+json while every other batch-level error is {error, message}",
        may_also=["ROB-01"], also=[],
        check="test_batch_level_errors_share_one_shape")
def mixed_error_shapes(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "malformed_json":
            call.set_response_json({"type": "about:blank", "title": "Bad Request", "status": 400,
                                    "detail": doc.get("message", "")})
            call.set_response_header("content-type", "application/problem+json")
    return on_batch_response(fn)(app)


@mutant("HTTP-05", "duplicate ids are reported as {error: {code, message}}, other errors as {error: code, message}",
        check="test_batch_level_errors_share_one_shape")
def nested_error_for_duplicates(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "duplicate_id":
            call.set_response_json({"error": {"code": "duplicate_id", "message": doc.get("message", "")}})
    return on_batch_response(fn)(app)


@mutant("HTTP-06", "any Content-Type is parsed as JSON: a text/plain batch is processed",
        check="test_non_json_content_type_gets_415")
def ignores_content_type(app):
    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            scope = dict(scope, headers=[(k, b"application/json" if k.lower() == b"content-type" else v)
                                         for k, v in scope["headers"]])
        await app(scope, receive, send)
    wrapped.router = getattr(app, "router", None)  # the in-process transport runs the app's lifespan
    return wrapped


@mutant("HTTP-06", "a non-JSON Content-Type gets 400 instead of 415", check="test_non_json_content_type_gets_415")
def wrong_media_type_400(app):
    def fn(call: Call) -> None:
        if call.status == 415:
            call.set_response_json({"error": "invalid_body", "message": "body must be JSON"}, 400)
    return on_batch_response(fn)(app)


@mutant("HTTP-07", "a batch whose items were all created answers 201 Created",
        check="test_processed_batches_answer_200")
def all_created_201(app):
    def fn(call: Call) -> None:
        if call.status == 200 and _outcomes(call) == {"ok"}:
            call.status = 201
    return on_batch_response(fn)(app)


@mutant("HTTP-07", "a processed batch with failed items answers 202 Accepted",
        may_also=["ROB-01"], also=[],
        check="test_processed_batches_answer_200")
def partial_202(app):
    def fn(call: Call) -> None:
        if call.status == 200 and "error" in _outcomes(call):
            call.status = 202
    return on_batch_response(fn)(app)


@mutant("HTTP-02", "an accepted async job is answered 207 Multi-Status instead of 202", may_also=["ROB-01"], also=["ASYNC-01"],
        check="test_no_batch_response_is_207")
def async_accepted_207(app):
    from ._base import Rewrite

    def fn(call: Call) -> None:
        if call.status == 202:
            call.status = 207
    return Rewrite(app, method="POST", path="/imports/batch", response=fn)


@mutant("HTTP-02", "a refused body (not JSON) is answered 207 Multi-Status with the error", may_also=["ROB-01"], also=["HTTP-04", "ROB-02"],
        check="test_no_batch_response_is_207")
def refusal_207(app):
    def fn(call: Call) -> None:
        if call.status == 400 and call.json() is None:
            call.status = 207
    return on_batch_response(fn)(app)


@mutant("HTTP-01", "an item whose id already exists (a unique-key clash at write time) aborts the whole batch "
        "with 409 Conflict, nothing applied; validation errors stay per item",
        # PART-02 cannot set up its batch re-using an id, PART-04's corrected resubmission is refused (full matrix)
        also=["PART-04"], errors=["PART-02"],
        check="test_mixed_batch_gets_2xx")
def existing_id_conflict_409(app):
    store = app.state.service.storage

    def fn(call: Call) -> None:
        doc = call.json()
        if call.status != 200 or (isinstance(doc, dict) and doc.get("atomic") is True):
            return
        res = [r for r in _results(call) if isinstance(r, dict)]
        clash = [r.get("id") for r in res if r.get("status") == "error"
                 and (r.get("error") or {}).get("code") == "already_exists"]
        if clash:
            ok = [r["id"] for r in res if r.get("status") == "ok"]
            store.connection().executemany("DELETE FROM orders WHERE client = ? AND id = ?",
                                           [(client_of(call), i) for i in ok])
            call.set_response_json({"error": "conflict",
                                    "message": f"order '{clash[0]}' already exists; the batch was not applied"}, 409)
    return on_batch_response(fn)(app)


@mutant("HTTP-04", "`operations: null` is read as an empty batch (`body.get('operations') or []`): 200 with no "
        "results", also=["ROB-02"],  # the hostile corpus's items_null gets the same 200
        check="test_unparseable_batches_get_400_json")
def null_items_empty_batch(app):
    def fn(call: Call) -> None:
        req = call.json()
        if call.status == 400 and isinstance(req, dict) and "operations" in req and req["operations"] is None:
            call.set_response_json({"results": [], "summary": {"total": 0, "succeeded": 0, "failed": 0}}, 200)
    return on_batch_response(fn)(app)


@mutant("HTTP-03", "a one-item batch goes through the single-item code path: its only item invalid, the answer "
        "is the single endpoint's 422 (no per-item result)",
        # PART-05 cannot set up its one-item batch (full matrix)
        errors=["PART-05"],
        also=["IDEM-07"],  # its one-item batch reusing an item key gets the single endpoint's 422
        check="test_all_invalid_batch_gets_2xx_with_item_errors")
def one_item_batch_422(app):
    def fn(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        res = _results(call)
        if call.status == 200 and isinstance(ops, list) and doc.get("atomic") is not True and len(ops) == 1 \
                and len(res) == 1 and isinstance(res[0], dict) and res[0].get("status") == "error":
            err = res[0].get("error") or {}
            call.set_response_json({"error": err.get("code"), "message": err.get("message"),
                                    "field": err.get("field")}, 422)
    return on_batch_response(fn)(app)
