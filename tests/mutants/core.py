"""Mutants of class CORE: envelope and per-item results."""
from __future__ import annotations

from ._base import Call, document_problem_json, mutant, on_batch_response, on_openapi, variation


# Cascades in the full matrix (every class runs): a mutant that breaks a building block every class
# relies on makes the rules built on it FAIL too, for true reasons (docs/kill-matrix.md).
# A result missing, invented or unreadable by id: every rule judged on a multi-item batch's results.
NEEDS_EVERY_RESULT = ["ATOM-04", "HTTP-03", "IDEM-05", "IDEM-07", "ORD-01", "ORD-02", "ORD-03", "ORD-04", "PAR-01",
                      "PAR-02", "PART-03", "ROB-02", "ROB-03", "SIZE-02"]
# An error result without a readable code: every MUST that names the code an item must get.
NEEDS_ERROR_CODES = ["IDEM-07", "ORD-03", "ORD-04", "PAR-02", "PART-03"]


def _results(call: Call) -> tuple[dict, list]:
    doc = call.response_json()
    return doc, (doc.get("results") if isinstance(doc, dict) else None) or []


@mutant("CORE-01", "an all-valid batch of several items answers 207 Multi-Status",
        also=["ATOM-04", "HTTP-02", "ROB-03", "SIZE-02"],
        check="test_valid_batch_gets_2xx_and_json")
def multi_status_for_all_valid(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 1 and all(r.get("status") == "ok" for r in res):
            call.status = 207
    return on_batch_response(fn)(app)


@mutant("CORE-02", "the last item's result is missing", also=NEEDS_EVERY_RESULT + ["PART-04"],
        errors=["IDEM-06", "PERF-01"],
        check="test_one_result_per_item")
def drops_last_result(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 1:
            res.pop()
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-02", "a result is duplicated",
        # ATOM-04 fails and PERF-01 errs only when their batches get the duplicated result in a way
        # they read (not in every run of the full matrix): timing-bound.
        may_also=["ATOM-04", "PERF-01"],
        check="test_one_result_per_item")
def duplicates_a_result(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and res:
            res.append(dict(res[0]))
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-02", "results carry server-invented ids instead of the items' ids", also=NEEDS_EVERY_RESULT,
        errors=["IDEM-06"],
        check="test_one_result_per_item")
def invents_ids(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 1:  # a one-item batch keeps its id (the preflight sees a result)
            for i, r in enumerate(res):
                r["id"] = f"srv-{i}"
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-03", "error results say status 'failed' instead of 'error'", may_also=["ROB-01"], also=["CORE-06", "HTTP-03", "ORD-01", "ROB-02"] + NEEDS_ERROR_CODES,
        errors=["IDEM-06"],
        check="test_result_status_and_payload")
def unknown_status(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            for r in res:
                if r.get("status") == "error":
                    r["status"] = "failed"
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-03", "ok results carry no data", may_also=["ROB-01"], also=["CORE-06", "PAR-01"], check="test_result_status_and_payload")
def ok_without_data(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            for r in res:
                r.pop("data", None)
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-04", "item errors are bare strings (the seed's anti-pattern)",
        also=NEEDS_ERROR_CODES,
        check="test_error_is_object_with_code_and_message")
def string_errors(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            for r in res:
                if isinstance(r.get("error"), dict):
                    r["error"] = r["error"].get("message", "invalid")
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-05", "results in reverse order (still correlated by id)", check="test_results_in_request_order")
def reversed_results(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            res.reverse()
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@variation("results shuffled but correlated by id: only CORE-05 (a SHOULD) may flag it", warns=["CORE-05"])
def shuffled_results(app):
    import random

    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            random.Random(7).shuffle(res)
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@variation("problem+json errors for batch-level failures", classes=["HTTP", "SIZE"])
def problem_json_errors(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if 400 <= call.status < 500 and isinstance(doc, dict) and isinstance(doc.get("error"), str):
            code = doc["error"]
            call.set_response_json({"type": f"https://errors.example/{code}", "title": code.replace("_", " "),
                                    "status": call.status, "detail": doc.get("message", ""), "code": code})
            call.set_response_header("content-type", "application/problem+json")
    return on_openapi(lambda doc: document_problem_json(doc, lambda p: p == "/orders/batch"))(on_batch_response(fn)(app))


@mutant("CORE-06", "the JSON response is labelled text/html", may_also=["ROB-01"], also=[],
        check="test_response_validates_and_is_json")
def html_content_type(app):
    def fn(call: Call) -> None:
        if call.status == 200:
            call.set_response_header("content-type", "text/html")
    return on_batch_response(fn)(app)


@mutant("CORE-06", "result ids are numbers, not the items' strings (schema violation)", may_also=["ROB-01"], also=["CORE-02"] + NEEDS_EVERY_RESULT,
        errors=["IDEM-06"],
        check="test_response_validates_and_is_json")
def numeric_result_ids(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 1:  # a one-item batch keeps its id (the preflight sees a result)
            for i, r in enumerate(res):
                r["id"] = i
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-07", "duplicate ids are accepted: the later item overwrites the earlier one",
        check="test_duplicate_ids_rejected_before_applying")
def accepts_duplicates(app):
    def fn(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if isinstance(ops, list) and _duplicated(ops):
            # The later item with an id wins; items without a usable id stay as they are (the
            # server refuses them as usual: only duplicate ids are mishandled).
            last = {op.get("id"): k for k, op in enumerate(ops) if isinstance(op, dict) and op.get("id") is not None}
            doc["operations"] = [op for k, op in enumerate(ops)
                                 if not (isinstance(op, dict) and op.get("id") is not None) or last[op["id"]] == k]
            call.set_json(doc)
    from ._base import Rewrite
    return Rewrite(app, request=fn)


@mutant("CORE-08", "summary counts every item as succeeded", check="test_summary_fields_agree")
def lying_summary(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and isinstance(doc.get("summary"), dict):
            doc["summary"]["succeeded"] = len(res)
            doc["summary"]["failed"] = 0
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-09", "results in reverse order for a target declared position-correlated",
        profile={"envelope": {"correlation": "position"}},
        # CORE-03: read by position, a reversed list gives valid items error results and invalid ones ok
        # results (the large batch's invalid items are not placed symmetrically, so reversing shows)
        # PAR-01: its multi-item batch read by position gives each template another template's data
        also=["CORE-03", "ORD-01", "PAR-01", "ROB-02"] + NEEDS_ERROR_CODES,
        check="test_position_correlated_results_keep_length_and_order")
def position_reversed(app):
    return reversed_results(app)


def _duplicated(ops: list) -> list:
    seen: set = set()
    dups = []
    for op in ops:
        item_id = op.get("id") if isinstance(op, dict) else None
        if item_id in seen and item_id not in dups:
            dups.append(item_id)
        seen.add(item_id)
    return dups


@mutant("CORE-07", "duplicate ids are refused with a 400 that does not say which id is duplicated",
        check="test_duplicate_ids_rejected_before_applying")
def duplicate_4xx_names_no_id(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if 400 <= call.status < 500 and isinstance(doc, dict) and doc.get("error") == "duplicate_id":
            call.set_response_json({"error": "duplicate_id", "message": "the batch has duplicate item ids"})
    return on_batch_response(fn)(app)


@mutant("CORE-07", "duplicate ids are refused with a 400 naming the id, but the batch's other items were applied",
        check="test_duplicate_ids_rejected_before_applying")
def duplicate_rejected_but_others_applied(app):
    from ._base import Rewrite

    def request(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        dups = _duplicated(ops) if isinstance(ops, list) else []
        if dups:
            call.state["dups"] = dups
            doc["operations"] = [op for op in ops if not (isinstance(op, dict) and op.get("id") in dups)]
            call.set_json(doc)

    def response(call: Call) -> None:
        dups = call.state.get("dups")
        if dups:
            call.set_response_json({"error": "duplicate_id", "message": f"duplicate item ids in one batch: {dups!r}",
                                    "ids": dups}, status=400)
    return Rewrite(app, request=request, response=response)


@mutant("CORE-08", "the summary's `errors` flag says false although items failed",
        profile={"envelope": {"summary": {"errors_flag": "/summary/errors"}}}, check="test_summary_fields_agree")
def errors_flag_false(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and isinstance(doc.get("summary"), dict):
            doc["summary"]["errors"] = False
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-08", "the summary's `errors` flag says true although every item succeeded",
        profile={"envelope": {"summary": {"errors_flag": "/summary/errors"}}}, check="test_summary_fields_agree")
def errors_flag_always_true(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and isinstance(doc.get("summary"), dict):
            doc["summary"]["errors"] = True
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@variation("the summary carries a correct `errors` flag, declared in the profile",
           profile={"envelope": {"summary": {"errors_flag": "/summary/errors"}}})
def errors_flag_correct(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and isinstance(doc.get("summary"), dict):
            doc["summary"]["errors"] = any(r.get("status") == "error" for r in res)
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-07", "duplicates are found by comparing whole items: byte-identical twins get the 400 naming the id, "
        "but the same id with a different payload is applied once, the later twin failing per item (200)",
        check="test_duplicate_ids_rejected_before_applying")
def duplicates_found_by_content(app):
    import json

    from ._base import Rewrite

    def request(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            return
        canon = [json.dumps(op, sort_keys=True) for op in ops]
        if len(set(canon)) < len(canon) or not _duplicated(ops):
            return  # identical twins: the server's own 400; no repeated id: nothing to hide
        seen: set = set()
        late = []
        for k, op in enumerate(ops):
            if op.get("id") in seen:
                late.append((k, op.get("id")))
            seen.add(op.get("id"))
        call.state["late"] = late
        doc["operations"] = [op for k, op in enumerate(ops) if k not in {k for k, _ in late}]
        call.set_json(doc)

    def response(call: Call) -> None:
        late = call.state.get("late")
        doc, res = _results(call)
        if not late or call.status != 200 or not isinstance(doc, dict):
            return
        for k, item_id in late:  # ascending positions: each lands where its item was
            res.insert(k, {"id": item_id, "status": "error", "error": {
                "code": "already_exists", "message": f"an order with id '{item_id}' already exists",
                "field": "id", "retryable": False}})
        doc["results"] = res
        summary = doc.get("summary") or {}
        doc["summary"] = {"total": len(res), "succeeded": summary.get("succeeded", 0),
                          "failed": summary.get("failed", 0) + len(late)}
        call.set_response_json(doc)
    return Rewrite(app, request=request, response=response)


@mutant("CORE-08", "the summary is counted after validation, before the writes: an item failing at write time "
        "(its id already exists) is counted as succeeded", check="test_summary_fields_agree")
def summary_counted_before_writes(app):
    validation = ("invalid_", "missing_field", "unknown_field")

    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and isinstance(doc, dict) and isinstance(doc.get("summary"), dict):
            bad = sum(1 for r in res if isinstance(r, dict) and r.get("status") == "error"
                      and str((r.get("error") or {}).get("code", "")).startswith(validation))
            doc["summary"] = {"total": len(res), "succeeded": len(res) - bad, "failed": bad}
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


# -- faults that show only in big batches, and answers rendered on another path (round 7) ----------

@mutant("CORE-02", "a batch over 500 items is written in chunks of 500 with an inclusive slice end: the item at "
        "each chunk edge is written again and answered twice (ok, then already_exists), 1,001 results for 1,000 "
        "items", check="test_large_batch_one_result_per_item")
def chunk_edge_answered_twice(app):
    chunk = 500

    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > chunk:
            out = []
            for k, r in enumerate(res):
                out.append(r)
                if k and k % chunk == 0:  # the first item of each later chunk was the last of the one before
                    out.append({"id": r.get("id"), "status": "error", "error": {
                        "code": "already_exists", "message": f"an order with id '{r.get('id')}' already exists",
                        "field": "id", "retryable": False}})
            doc["results"] = out
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-03", "to keep big answers small, a batch of more than 100 items gets ok results without `data` "
        "(error results keep their `error`); smaller batches are complete",
        also=["CORE-06"],  # the schema requires `data` on an ok result; the large batch is judged there too
        check="test_large_batch_result_status_and_payload")
def large_batch_ok_without_data(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 100:
            for r in res:
                if r.get("status") == "ok":
                    r.pop("data", None)
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-05", "a batch over 100 items runs in chunks of 100 on parallel workers, and their results are "
        "joined in the order the chunks finish (the last first), still correlated by id",
        check="test_large_batch_results_in_request_order")
def large_batch_in_chunk_completion_order(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and len(res) > 100:
            chunks = [res[k:k + 100] for k in range(0, len(res), 100)]
            doc["results"] = [r for c in reversed(chunks) for r in c]
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-06", "an all-ok batch takes a fast path that streams the pre-serialised results with the framework's "
        "default media type, text/plain; a batch with a failed item is answered application/json",
        may_also=["ROB-01"], check="test_every_kind_of_batch_answer_validates_and_is_json")
def all_ok_answer_as_text_plain(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200 and res and all(isinstance(r, dict) and r.get("status") == "ok" for r in res):
            call.set_response_header("content-type", "text/plain; charset=utf-8")
    return on_batch_response(fn)(app)


@mutant("CORE-06", "the failure of an atomic batch is rendered by the transaction's rollback handler as text/plain "
        "(the same JSON text, the framework's default media type); processed batches stay application/json",
        may_also=["ROB-01"], check="test_every_kind_of_batch_answer_validates_and_is_json")
def atomic_failure_as_text_plain(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") == "failed":
            call.set_response_header("content-type", "text/plain; charset=utf-8")
    return on_batch_response(fn)(app)


@mutant("CORE-06", "a replayed response (same Idempotency-Key, same body) is sent from the stored body and status "
        "alone: no Content-Type, where the first answer was application/json",
        may_also=["ROB-01"], check="test_every_kind_of_batch_answer_validates_and_is_json")
def replay_without_content_type(app):
    def fn(call: Call) -> None:
        if any(k.lower() == b"idempotent-replayed" and v.strip().lower() == b"true" for k, v in call.response_headers):
            call.set_response_header("content-type", None)
    return on_batch_response(fn)(app)


@mutant("CORE-09", "a target declared position-correlated runs a batch over 100 items in chunks of 100 on parallel "
        "workers and joins their results in the order the chunks finish (the last first): a small batch (one "
        "chunk) keeps its order, a large one does not",
        profile={"envelope": {"correlation": "position"}},
        # PAR-02: its large-batch check reads the same answer by position, so each invalid item past the
        # first chunk gets another item's error (the examples cycle by three, the chunks hold ten invalid)
        also=["PAR-02"],
        check="test_large_batch_position_correlated_results_keep_length_and_order")
def position_large_batch_in_chunk_completion_order(app):
    return large_batch_in_chunk_completion_order(app)


@mutant("CORE-04", "a missing required member is caught by the framework's request-schema layer, whose item errors "
        "carry only a message ({\"message\": \"amount: field required\"}); the errors of the hand-written checks "
        "(invalid_amount, invalid_currency) carry a code",
        # the batch-response schema requires error.code; PAR-02 and PART-03 judge the missing_field example's code
        also=["CORE-06", "PAR-02", "PART-03"],
        check="test_error_is_object_with_code_and_message")
def missing_member_error_without_code(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            for r in res:
                err = r.get("error")
                if isinstance(err, dict) and err.get("code") == "missing_field":
                    r["error"] = {"message": f"{err.get('field', 'amount')}: field required"}
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("CORE-04", "an item that fails at write time (its id already exists) is answered by the database layer's "
        "exception handler, whose error carries only the driver's text ({\"message\": \"UNIQUE constraint failed: "
        "orders.id\"}); validation errors carry a code",
        # ROB-01: a fuzzed batch that re-uses a stored id gets an item error outside the documented schema
        may_also=["ROB-01"],
        check="test_error_is_object_with_code_and_message")
def write_time_error_without_code(app):
    def fn(call: Call) -> None:
        doc, res = _results(call)
        if call.status == 200:
            for r in res:
                err = r.get("error")
                if isinstance(err, dict) and err.get("code") == "already_exists":
                    r["error"] = {"message": "UNIQUE constraint failed: orders.id"}
            call.set_response_json(doc)
    return on_batch_response(fn)(app)
