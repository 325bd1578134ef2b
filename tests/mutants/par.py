"""Mutants of class PAR: single/batch parity."""
from __future__ import annotations

from typing import Any

from ._base import Call, mutant, on_batch_response, on_openapi, variation


def _single_response(fn):
    return on_batch_response(fn, path="/orders", method="POST")


def _openapi(fn):
    return on_batch_response(fn, path="/openapi.json", method="GET")


@mutant("PAR-01", "the single endpoint wraps the created order in {\"order\": ...}; batch data is the bare order",
        may_also=["ROB-01"], also=[],
        check="test_ok_data_matches_single_response")
def single_wraps_resource(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 201 and isinstance(doc, dict):
            call.set_response_json({"order": doc})
    return _single_response(fn)(app)


@mutant("PAR-01", "batch ok results carry a trimmed order (no note) while the single endpoint returns all of it",
        check="test_ok_data_matches_single_response")
def batch_data_trimmed(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        changed = False
        for r in (doc.get("results") if isinstance(doc, dict) else None) or []:
            if isinstance(r, dict) and isinstance(r.get("data"), dict) and "note" in r["data"]:
                del r["data"]["note"]
                changed = True
        if changed:
            call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PAR-01", "a batch of two or more items is bulk-inserted and its ok results carry the order rebuilt "
        "from the bulk insert's column list (no note, amount as a Decimal rendered as a string); a one-item "
        "batch takes the single-row path and returns the stored row",
        check="test_ok_data_matches_single_response")
def multi_item_batch_data_trimmed(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        results = doc.get("results") if isinstance(doc, dict) else None
        if not isinstance(results, list) or len(results) < 2:
            return
        for r in results:
            if isinstance(r, dict) and r.get("status") == "ok" and isinstance(r.get("data"), dict):
                r["data"].pop("note", None)
                if "amount" in r["data"]:
                    r["data"]["amount"] = str(r["data"]["amount"])
        call.set_response_json(doc)
    return on_batch_response(fn)(app)


@mutant("PAR-01", "the single endpoint renders amounts as strings (\"12.5\")",
        may_also=["ROB-01"], also=[],
        check="test_ok_data_matches_single_response")
def single_amount_as_string(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 201 and isinstance(doc, dict) and "amount" in doc:
            doc["amount"] = str(doc["amount"])
            call.set_response_json(doc)
    return _single_response(fn)(app)


@mutant("PAR-02", "the single endpoint reports every invalid order as 'validation_failed'",
        check="test_invalid_item_same_code_single_and_batch")
def single_generic_code(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 422 and isinstance(doc, dict):
            doc["error"] = "validation_failed"
            call.set_response_json(doc)
    return _single_response(fn)(app)


@mutant("PAR-02", "the single endpoint accepts a negative amount (only the batch validates it)",
        may_also=["ROB-01"], also=[],
        check="test_invalid_item_same_code_single_and_batch")
def single_skips_amount_check(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 422 and isinstance(doc, dict) and doc.get("error") == "invalid_amount":
            req = call.json() or {}
            call.set_response_json({**req, "version": 1, "created_at": "2024-01-01T00:00:00.000Z"}, 201)
    return _single_response(fn)(app)


def _schemas(call: Call) -> tuple[Any, dict | None]:
    doc = call.response_json()
    try:
        return doc, doc["components"]["schemas"]
    except (KeyError, TypeError):
        return doc, None


@mutant("PAR-03", "the OpenAPI batch item schema drops amount's exclusiveMinimum (a hand-copied schema that drifted)",
        check="test_batch_item_schema_is_single_request_schema")
def openapi_item_schema_drifted(app):
    def fn(call: Call) -> None:
        doc, schemas = _schemas(call)
        if schemas is not None:
            props = schemas["BatchItem"]["properties"]
            props["amount"] = {"type": "number", "maximum": 1000000000}
            call.set_response_json(doc)
    return _openapi(fn)(app)


@mutant("PAR-03", "the OpenAPI batch item schema allows a field the single request does not ('priority')",
        check="test_batch_item_schema_is_single_request_schema")
def openapi_item_extra_field(app):
    def fn(call: Call) -> None:
        doc, schemas = _schemas(call)
        if schemas is not None:
            schemas["BatchItem"]["properties"]["priority"] = {"type": "integer"}
            call.set_response_json(doc)
    return _openapi(fn)(app)


def _hand_written_item_schema(doc: dict) -> None:
    """The batch item schema written out by hand instead of by $ref: the same members and constraints,
    `required` and the currency enum listed in another order (both are sets in JSON Schema)."""
    item = doc["components"]["schemas"]["BatchItem"]
    item["required"] = list(reversed(item["required"]))
    item["properties"]["currency"] = {"type": "string", "enum": ["EUR", "GBP", "USD"]}


@variation("the OpenAPI batch item schema is written out by hand: `required` and the currency enum are listed "
           "in another order than the single request schema's (the same sets: the same schema)",
           classes=["PAR"])
def openapi_item_schema_reordered(app):
    return on_openapi(_hand_written_item_schema)(app)


@mutant("PAR-02", "a batch over 100 items takes a bulk path (COPY into a staging table) whose item errors come from "
        "the database's constraints, code check_violation for every invalid item; smaller batches are validated "
        "item by item with the single endpoint's validator",
        check="test_invalid_items_of_a_large_batch_same_code_as_single")
def large_batch_errors_from_constraints(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        results = doc.get("results") if isinstance(doc, dict) else None
        if call.status != 200 or not isinstance(results, list) or len(results) <= 100:
            return
        for r in results:
            if isinstance(r, dict) and r.get("status") == "error" and isinstance(r.get("error"), dict) \
                    and str(r["error"].get("code", "")).startswith(("invalid_", "missing_")):
                r["error"]["code"] = "check_violation"
        call.set_response_json(doc)
    return on_batch_response(fn)(app)
