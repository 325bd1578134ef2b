"""``GET /openapi.json``: an OpenAPI 3.1 document built from the wire schemas in ``schemas/``."""
from __future__ import annotations

import copy
from typing import Any

from ._schemas import ID_PREFIX, load_schema
from .settings import MAX_HEAD_BYTES, Settings

# Component name of each schema file the API uses.
COMPONENTS = {
    "order.schema.json": "Order",
    "batch-item.schema.json": "BatchItem",
    "batch-request.schema.json": "BatchRequest",
    "result.schema.json": "Result",
    "batch-response.schema.json": "BatchResponse",
    "error.schema.json": "Error",
    "job.schema.json": "Job",
}


def _rewrite(node: Any, own: str) -> Any:
    """Rewrite ``$ref``s (cross-file by ``$id``, or local ``#...``) to ``#/components/schemas/...``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("$id", "$schema"):
                continue
            if key == "$ref" and isinstance(value, str):
                target, _, fragment = value.partition("#")
                name = own if not target else COMPONENTS.get(target.removeprefix(ID_PREFIX), target)
                out[key] = f"#/components/schemas/{name}{fragment}"
            else:
                out[key] = _rewrite(value, own)
        return out
    if isinstance(node, list):
        return [_rewrite(v, own) for v in node]
    return node


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: tuple[int, str]) -> dict[str, Any]:
    return {str(status): _json("Error", text) for status, text in codes}


def build_openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the reference server for ``settings``' limits."""
    schemas = {name: _rewrite(copy.deepcopy(load_schema(file)), name) for file, name in COMPONENTS.items()}
    schemas["StoredOrder"] = {"$ref": "#/components/schemas/Order/$defs/stored"}
    ops = schemas["BatchRequest"]["properties"]["operations"]
    ops["minItems"] = 1  # the wire schema allows [] so that `batch_empty` is this server's answer
    ops["maxItems"] = settings.max_items
    ops["description"] = (f"At most {settings.max_items} items ({settings.atomic_max_items} when "
                          f"`atomic` is true); an empty array is answered 400 `batch_empty`.")
    schemas["BatchRequest"]["properties"]["atomic"]["description"] = (
        "All-or-nothing mode, per request: if any item fails, nothing is applied and the answer is "
        f"422 with `status: failed`. At most {settings.atomic_max_items} items.")
    limits = (f"Limits: {settings.max_items} items per batch, {settings.atomic_max_items} per atomic batch, "
              f"{settings.async_max_items} per async job, {settings.max_bytes} bytes per request body. "
              f"Idempotency keys are kept {settings.idempotency_retention_seconds} seconds.")
    batch_errors = _errors(
        (400, "`malformed_json`, `invalid_body`, `batch_empty` or `duplicate_id` (nothing applied)"),
        (413, "`batch_too_large` (\"Maximum N items per batch; received M\") or `payload_too_large`"),
        (415, "`unsupported_media_type`: the body must be application/json"),
    )
    key_param = {"name": "Idempotency-Key", "in": "header", "required": settings.idempotency_key_required,
                 "description": (f"Batch-level idempotency key (1..255 characters), scoped to the client and "
                                 f"kept {settings.idempotency_retention_seconds} s: the same key and body "
                                 "replays the first response with `Idempotent-Replayed: true`."),
                 "schema": {"type": "string", "minLength": 1, "maxLength": 255}}
    key_errors = _errors(
        (409, "`idempotency_key_in_use`: the first request with this key is still running (Retry-After)"),
    )
    batch_errors[str(400)] = _json("Error", "`malformed_json`, `invalid_body`, `batch_empty`, `duplicate_id`, "
                                   "`duplicate_idempotency_key` or `invalid_idempotency_key` (nothing applied)")
    job_param = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    security_note = ("Any `Authorization: Bearer <token>` names a client; requests without one belong "
                     "to one anonymous client. Orders are scoped per client. On every path, a request that "
                     "is not valid HTTP/1.1 gets 400 `malformed_request` and a request line and headers over "
                     f"{MAX_HEAD_BYTES // 1024} KiB get 431 `headers_too_large` (an Error body), and the connection is closed.")
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "batchspec reference server",
            "version": "0.1.0",
            "description": f"Orders, single and batch. {limits} {security_note}",
        },
        "x-batch": {
            "max_items": settings.max_items,
            "atomic_max_items": settings.atomic_max_items,
            "async_max_items": settings.async_max_items,
            "max_bytes": settings.max_bytes,
            "idempotency_retention_seconds": settings.idempotency_retention_seconds,
        },
        "paths": {
            "/orders": {"post": {
                "operationId": "createOrder",
                "summary": "Create one order",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Order"}}}},
                "responses": {
                    "201": _json("StoredOrder", "The stored order"),
                    **_errors((400, "`malformed_json` or `invalid_body`"),
                              (409, "`already_exists`, or `parent_not_found` (the state conflicts)"),
                              (413, "`payload_too_large`"),
                              (415, "`unsupported_media_type`"),
                              (422, "Invalid order: `{error: invalid_<field>|missing_field|unknown_field, "
                                    "message, field}`")),
                },
            }},
            "/orders/{id}": {"get": {
                "operationId": "readOrder",
                "summary": "Read one order of the calling client",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _json("StoredOrder", "The order"),
                              **_errors((404, "`not_found` (also for another client's order)"))},
            }},
            "/orders/batch": {"post": {
                "operationId": "batchOrders",
                "summary": "Create orders in a batch (per-item results; optional atomic mode)",
                "description": (
                    "Every processed batch answers 200 with one result per item in request order and a "
                    "summary; valid items are applied, invalid ones have no effect. Items may declare "
                    "`depends_on` (ids in the same batch): dependencies run first; a failed dependency "
                    "fails the dependent with `dependency_failed`; unknown ids get `unknown_dependency`, "
                    "cycles `dependency_cycle`. With `\"atomic\": true` the batch is all-or-nothing "
                    "(422 `status: failed` when any item fails). "
                    "Per-item codes: `invalid_<field>`, `missing_field`, `unknown_field`, `already_exists`, "
                    "`parent_not_found`, `dependency_failed`, `unknown_dependency`, `dependency_cycle`, "
                    f"`not_applied`. {limits}"),
                "x-batch-atomic": {"mode": "per-request", "field": "atomic",
                                   "max_items": settings.atomic_max_items,
                                   "failure_status": 422, "failure_code": "atomic_batch_failed"},
                "x-batch-max-items": settings.max_items,
                "x-batch-max-bytes": settings.max_bytes,
                "parameters": [key_param, {
                    "name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "`respond-async` turns the batch into a job (202, as POST /imports/batch)"}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/BatchRequest"}}}},
                "responses": {
                    "200": _json("BatchResponse", "Processed: one result per item, in request order"),
                    "202": _json("Job", "Accepted as a job (with `Prefer: respond-async`)"),
                    "422": {"description": "Atomic batch failed (nothing was applied), or "
                                           "`idempotency_key_reused`: the key was used with another body",
                            "content": {"application/json": {"schema": {"anyOf": [
                                {"$ref": "#/components/schemas/BatchResponse/$defs/atomic_failure"},
                                {"$ref": "#/components/schemas/Error"}]}}}},
                    **batch_errors,
                    **key_errors,
                },
            }},
            "/imports/batch": {"post": {
                "operationId": "createImportJob",
                "summary": "Create an async batch job (202)",
                "description": (f"Up to {settings.async_max_items} items, the same item shape as the sync batch. "
                                "The job is stored before the 202; a background worker applies it in chunks, "
                                "writing each item's result as it is known. `callback_url` (optional) gets one "
                                "POST of the final status. The Idempotency-Key returns the same job on a retry."),
                "x-batch-max-items": settings.async_max_items,
                "parameters": [key_param],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/BatchRequest"}}}},
                "responses": {
                    "202": _json("Job", "Accepted: `job_id` and `status_url` (also in Location)"),
                    "422": _json("Error", "`idempotency_key_reused`"),
                    **batch_errors,
                    **key_errors,
                },
            }},
            "/imports/batch/{job_id}": {
                "get": {
                    "operationId": "readImportJob",
                    "summary": "Job status, counts and per-item results (paged with a cursor)",
                    "parameters": [job_param,
                                   {"name": "cursor", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 0}},
                                   {"name": "limit", "in": "query", "required": False,
                                    "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {"200": _json("Job", "The job (Retry-After while not terminal)"),
                                  **_errors((400, "`invalid_cursor`"),
                                            (404, "`job_not_found` (also for another client's job)"))},
                },
                "delete": {
                    "operationId": "cancelImportJob",
                    "summary": "Cancel a job: pending items stop, finished ones stay",
                    "parameters": [job_param],
                    "responses": {"200": _json("Job", "The cancelled job"),
                                  **_errors((404, "`job_not_found` (also for another client's job)"),
                                            (409, "`job_already_finished`"))},
                },
            },
        },
        "components": {"schemas": schemas},
    }
