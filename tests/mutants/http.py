"""Mutants of class HTTP: status codes and batch-level error bodies."""
from __future__ import annotations

from ._base import Call, client_of, document_problem_json, mutant, on_batch_response, on_openapi, variation


def _results(call: Call) -> list:
    doc = call.response_json()
    return (doc.get("results") if isinstance(doc, dict) else None) or []


def _outcomes(call: Call) -> set:
    return {r.get("status") for r in _results(call) if isinstance(r, dict)}


@mutant("HTTP-01", "a batch with any failed item answers 422 (results still in the body)",
        check="test_mixed_batch_gets_2xx", may_also=["ROB-01"], also=["CORE-02", "IDEM-07"],  # a mixed batch refused whole FAILs CORE-02 too
        # Not PART-02 nor PART-05: they judge the 422 to their mixed batch (its invalid items are not
        # readable: PASS; its valid items refused with it but ok alone: a SHOULD, WARN)
        errors=["CORE-03", "CORE-04", "CORE-05", "CORE-06", "CORE-08", "IDEM-01", "IDEM-06", "ORD-01", "ORD-03", "PAR-02", "PART-01", "PART-03", "PART-04", "PART-06"])
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
        # PART-05 WARNs (a lone invalid item gets the 422, in a batch an error result): a SHOULD, so no
        # exemption (an `also` would be stale: it never FAILs without --strict)
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
        # PART-04's corrected resubmission is refused (full matrix). PART-02 judges the 409 to its batch
        # re-using an id (the clashing item failed) and PASSes: the stored order is unchanged.
        also=["PART-04"],
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
        # PART-05 WARNs (a lone invalid item gets the 422, in a batch an error result): a SHOULD, so no
        # exemption (an `also` would be stale: it never FAILs without --strict)
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


# -- Round 7: wrong verdicts found by a tester (each a real-world bug the kit passed) ----------------------

@mutant("HTTP-02", "per-item outcomes that differ in kind (an id that already exists: a write-time conflict beside "
        "ok items) are answered 207 Multi-Status; validation failures still get 200",
        may_also=["ROB-01"],  # a 207 the OpenAPI document does not list, where ROB's fuzzing meets a clash
        also=["HTTP-01"],  # its second batch (valid items and one whose id exists) gets the 207
        check="test_no_batch_response_is_207")
def write_conflict_207(app):
    def fn(call: Call) -> None:
        if call.status == 200 and any(isinstance(r, dict) and (r.get("error") or {}).get("code") == "already_exists"
                                      for r in _results(call)):
            call.status = 207
    return on_batch_response(fn)(app)


@mutant("HTTP-05", "the byte-limit refusal comes from a body-size middleware in front of the app: 413 "
        "{\"detail\": \"Request body too large\"} (FastAPI/Starlette style), every other batch-level error "
        "{error, message}",
        check="test_batch_level_errors_share_one_shape")
def size_guard_detail_413(app):
    def fn(call: Call) -> None:
        if call.status == 413 and (call.response_json() or {}).get("error") == "payload_too_large":
            call.set_response_json({"detail": "Request body too large"})
    return on_batch_response(fn)(app)


@mutant("HTTP-05", "envelope errors found by the framework's request-model validation (no or a non-array "
        "'operations', a non-object body) answer 400 {\"detail\": \"...\"}, every other batch-level error "
        "{error, message}",
        may_also=["ROB-01"],  # ROB's fuzzing sends such bodies: a 400 body the OpenAPI document does not describe
        check="test_batch_level_errors_share_one_shape")
def request_model_detail_400(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 400 and isinstance(doc, dict) and doc.get("error") == "invalid_body":
            call.set_response_json({"detail": doc["message"]})
    return on_batch_response(fn)(app)


@mutant("HTTP-06", "the Content-Type check is a CSRF guard: only the CORS-safelisted types (text/plain, "
        "form-urlencoded, multipart/form-data) get 415; application/xml or application/octet-stream is parsed "
        "as JSON (express.json({type: '*/*'})) and processed",
        check="test_non_json_content_type_gets_415")
def only_cors_safelisted_types_refused(app):
    from ._base import Rewrite
    refused = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")

    def req(call: Call) -> None:
        ctype = (call.header("content-type") or "").split(";")[0].strip().lower()
        if ctype and ctype not in refused:
            call.headers["content-type"] = "application/json"
    return Rewrite(app, request=req)


@mutant("HTTP-07", "a committed atomic batch (everything created in one transaction) answers 201 Created; the "
        "non-atomic endpoint answers 200",
        check="test_processed_batches_answer_200")
def atomic_committed_201(app):
    from ._base import Rewrite

    def req(call: Call) -> None:
        doc = call.json()
        call.state["atomic"] = isinstance(doc, dict) and doc.get("atomic") is True

    def resp(call: Call) -> None:
        if call.state.get("atomic") and call.status == 200:
            call.status = 201
    return Rewrite(app, request=req, response=resp)


@variation("every batch-level error is the same RFC 9457 problem body; the app's handler labels it "
           "application/problem+json, the media-type guard (415, a middleware) application/json: one body shape",
           classes=["HTTP", "SIZE"])
def problem_body_mixed_labels(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if 400 <= call.status < 500 and isinstance(doc, dict) and isinstance(doc.get("error"), str):
            code = doc["error"]
            call.set_response_json({"type": f"https://errors.example.com/{code}", "title": code.replace("_", " "),
                                    "status": call.status, "detail": doc.get("message", ""), "code": code})
            call.set_response_header("content-type",
                                     "application/json" if call.status == 415 else "application/problem+json")
    return on_openapi(lambda doc: document_problem_json(doc, lambda p: p == "/orders/batch"))(on_batch_response(fn)(app))
