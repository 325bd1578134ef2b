"""PAR — single/batch parity, where a single endpoint is declared. SPEC §4."""
from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.checks import (
    expect, observed, openapi, without_fields, response_json, setup_failed, setup_ok, short,
)


def _comparable(doc: Any, ignore: set[str]) -> Any:
    return without_fields(doc, ignore) if isinstance(doc, dict) else doc


@pytest.mark.concurrent
@pytest.mark.rule("PAR-01", clause="an ok result's data equals the single endpoint's response for "
                  "the same payload (server fields ignored), in a one-item and in a multi-item batch")
def test_ok_data_matches_single_response(target, items, envelope, profile):
    """PAR-01 MUST: an ok result's `data` matches the single endpoint's response for the same item (server-generated fields aside)."""
    target.endpoint("single")
    if envelope.failures_only:
        pytest.skip("failure-only results (envelope.results_mode): an ok item has no result entry, so no data "
                    "to compare with the single endpoint's answer")
    ignore = set(profile.get("items.server_fields") or []) | {items.id_field}
    tpls = items.templates()[:3]
    if not tpls:
        pytest.skip("the profile declares no items.valid templates")
    singles: list[Any] = []
    for tpl in tpls:
        single = setup_ok(target.single(items.with_id(tpl)), "creating an item through the single endpoint")
        # the created resource where endpoints.single.resource says (default: the whole answer)
        single_doc = target.resource_of("single", single)
        if not isinstance(single_doc, dict):
            pytest.skip("the single endpoint answers no JSON object to compare with"
                        + (f" at {profile.get('endpoints.single.resource')!r} (endpoints.single.resource)"
                           if profile.get("endpoints.single.resource") else ""))
        singles.append(single_doc)
    # A server may build a batch's data on another path than a one-item batch's (a bulk insert that
    # returns a column subset for 2+ items, a single-row insert for one): each size is compared. The
    # multi-item batch holds every template (at least two items, within limits.max_items).
    size = max(2, len(tpls))
    cap = profile.get("limits.max_items")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap < size:
        size = cap
    batches = [[0]] + ([[k % len(tpls) for k in range(size)]] if size >= 2 else [])
    if size < 2:
        observed(f"limits.max_items is {cap}: only one-item batches were compared with the single endpoint")
    differ: dict[str, Any] = {}
    for which in batches:
        batch = [items.with_id(tpls[k]) for k in which]
        label = f"a {len(batch)}-item batch"
        resp = setup_ok(target.batch(batch, note=f"PAR-01: {label}, each item's data compared with the single "
                                                  "endpoint's answer"), label)
        results = envelope.result_map(response_json(resp), batch)
        for k, item in zip(which, batch):
            r = results.get(items.id_of(item))
            key = f"{short(tpls[k], 80)} in {label}"
            if r is None or r.ok is not True:
                differ[key] = f"the batch did not report ok: {short(r.raw if r else resp.text, 200)}"
                continue
            a, b = _comparable(singles[k], ignore), _comparable(r.data, ignore)
            if a != b:
                differ[key] = {"single": short(a, 250), "batch data": short(b, 250)}
    expect(not differ, "a batch ok result's data differs from the single endpoint's response",
           expected=f"equal, ignoring {sorted(ignore)}", seen=differ)


@pytest.mark.concurrent
@pytest.mark.rule("PAR-02", clause="an invalid item gets the same error code from the single "
                  "endpoint and in a batch")
def test_invalid_item_same_code_single_and_batch(target, items, envelope, profile):
    """PAR-02 MUST: an invalid item gets the same error code in a batch as from the single endpoint."""
    target.endpoint("single")
    n = len(profile.get("items.invalid") or [])
    invalid = items.invalid(max(n, 1))
    differ: dict[str, Any] = {}
    for inv in invalid:
        single = target.single(items.with_id(inv.item), note="the invalid item alone")
        single_codes = envelope.error_codes(single) if not 200 <= single.status_code < 300 else []
        batch_item = items.with_id(inv.item)
        batch = [items.one(), batch_item]
        resp = setup_ok(target.batch(batch), "a batch with the invalid item")
        r = envelope.result_map(response_json(resp), batch).get(items.id_of(batch_item))
        batch_code = r.error_code if r is not None and r.ok is False else None
        if batch_code is None or batch_code not in single_codes:
            differ[inv.code] = {"single": f"{single.status_code} {single_codes or short(single.text, 150)}",
                                "batch": batch_code if batch_code else short(r.raw if r else resp.text, 150)}
    expect(not differ, "an invalid item gets different error codes from the single endpoint and in a batch",
           expected="the same code", seen=differ)


@pytest.mark.concurrent
@pytest.mark.rule("PAR-02", clause="each invalid item of a large mixed batch (CORE's, limits.max_items items, at most "
                  "1,000) gets the error code the single endpoint gives the same invalid item")
def test_invalid_items_of_a_large_batch_same_code_as_single(run_context, target, items, envelope, profile):
    """PAR-02 MUST: an invalid item gets the same error code in a batch as from the single endpoint."""
    # A batch endpoint may take another path past some size (a bulk insert, a COPY into a staging table)
    # whose item errors come from elsewhere (the database's constraints): two-item batches show the
    # single endpoint's codes, a big one does not. The large batch is CORE's (sent once per run), which
    # holds every items.invalid example many times over.
    target.endpoint("single")
    from conformance.suites.test_core import large_batch

    large = large_batch(run_context, target, items, envelope, profile)
    by_id = envelope.result_map(response_json(setup_ok(large.resp, large.what)), large.mixed.items)
    if not by_id:
        setup_failed(f"{large.what} got no readable results (CORE-02 judges that)")
    singles: dict[str, list[Any]] = {}
    differ: dict[str, Any] = {}
    unanswered = 0
    for item_id, inv in large.mixed.invalid.items():
        if inv.code not in singles:
            one = target.single(items.with_id(inv.item), note=f"PAR-02: the invalid item ({inv.code}) alone")
            singles[inv.code] = envelope.error_codes(one) if not 200 <= one.status_code < 300 else []
            if not singles[inv.code]:
                differ[inv.code] = {"single": f"{one.status_code} {short(one.text, 150)}"}
        r = by_id.get(item_id)
        if r is None:
            unanswered += 1
            continue
        code = r.error_code if r.ok is False else None
        if code is None or code not in singles[inv.code]:
            got = differ.setdefault(inv.code, {})
            got.setdefault("single", singles[inv.code])
            got.setdefault("batch", {})
            key = repr(code) if code is not None else f"not an error: {short(r.raw, 100)}"
            got["batch"][key] = got["batch"].get(key, 0) + 1
    if unanswered:
        observed(f"{unanswered} invalid items of {large.what} had no result to compare (CORE-02 judges that)")
    expect(not differ, f"invalid items of {large.what} get other error codes than from the single endpoint",
           expected="for each invalid example, the code the single endpoint gives it",
           seen={k: {**v, "batch": {c: f"{n} items" for c, n in v.get("batch", {}).items()}} for k, v in differ.items()})


@pytest.mark.concurrent
@pytest.mark.rule("PAR-03", clause="the OpenAPI batch item schema is the single endpoint's request "
                  "schema")
def test_batch_item_schema_is_single_request_schema(target, envelope, profile):
    """PAR-03 SHOULD: the batch item schema is the single endpoint's request schema (OpenAPI)."""
    single_ep = target.endpoint("single")
    doc, where = openapi.load(target, profile)
    if doc is None:
        pytest.skip(f"no OpenAPI document: {where}")
    batch_ep = profile.get("endpoints.batch")
    single_op = openapi.operation(doc, single_ep.get("method", "POST"), single_ep["path"])
    batch_op = openapi.operation(doc, batch_ep.get("method", "POST"), batch_ep["path"])
    expect(single_op is not None and batch_op is not None,
           f"the OpenAPI document ({where}) does not describe both the single and the batch endpoint",
           expected=f"{single_ep['path']} and {batch_ep['path']}", seen=sorted((doc.get("paths") or {}).keys()))
    single_schema = openapi.request_schema(doc, single_op)
    batch_schema = openapi.request_schema(doc, batch_op)
    expect(single_schema is not None and batch_schema is not None,
           "a request schema is missing from the OpenAPI document", expected="JSON request bodies for both",
           seen={"single": single_schema is not None, "batch": batch_schema is not None})
    pointer = envelope.request_items
    arr = openapi.at_pointer(doc, batch_schema, pointer) if pointer else openapi.deref(doc, batch_schema)
    item_schema = openapi.array_items(doc, arr) if arr is not None else None
    expect(item_schema is not None, "the batch request schema has no item schema where the profile puts the items",
           expected=f"an array schema at {pointer or 'the top level'}", seen=short(batch_schema, 300))
    if _same_ref(single_schema, item_schema):
        return
    batch_only = {f for f in (profile.get("idempotency.item_field"), profile.get("dependencies.field")) if f}
    # Compared as JSON Schema means them: `required`, `enum` and a `type` list are sets, and so are
    # the subschemas of allOf/anyOf/oneOf (a hand-written schema that lists them in another order is
    # the same schema, and must not WARN).
    a = _normalised(openapi.resolved(doc, single_schema))
    b = _normalised(_without(openapi.resolved(doc, item_schema), batch_only))
    expect(a == b, "the batch item schema is not the single endpoint's request schema",
           expected=short(a, 400), seen=short(b, 400))


def _same_ref(a: Any, b: Any) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and isinstance(a.get("$ref"), str) and a.get("$ref") == b.get("$ref")


def _without(schema: Any, fields: set[str]) -> Any:
    """The item schema less the batch-only members (item idempotency key, depends_on)."""
    if not isinstance(schema, dict) or not fields:
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: v for k, v in out["properties"].items() if k not in fields}
    if isinstance(out.get("required"), list):
        out["required"] = [r for r in out["required"] if r not in fields]
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [_without(s, fields) for s in out["allOf"]]
    return out


# Keywords whose value is a set written as an array (JSON Schema 2020-12 §6.1.1-6.1.2, §6.5.3, §10.2.1):
# their order carries no meaning. `prefixItems` (and `items` as an array) are ordered and stay as written.
_SET_OF_VALUES = ("required", "enum", "type")
_SET_OF_SCHEMAS = ("allOf", "anyOf", "oneOf")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _normalised(schema: Any) -> Any:
    """`schema` with its set-valued keywords in one canonical order (duplicates dropped, a one-type
    list as the type itself), recursing only into subschemas (the reader's one walk,
    `openapi.map_subschemas`): an `enum` value or a property named `required` is data, never reordered."""
    if not isinstance(schema, dict):
        return schema
    out = openapi.map_subschemas(schema, _normalised)
    for key, value in list(out.items()):
        if key in _SET_OF_VALUES and isinstance(value, list):
            value = [json.loads(c) for c in sorted({_canon(v) for v in value})]
            out[key] = value[0] if key == "type" and len(value) == 1 else value
        elif key in _SET_OF_SCHEMAS and isinstance(value, list):
            out[key] = [json.loads(c) for c in sorted({_canon(v) for v in value})]
        elif key == "dependentRequired" and isinstance(value, dict):
            out[key] = {k: sorted(set(v)) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
                        for k, v in value.items()}
    return out
