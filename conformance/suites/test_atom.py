"""ATOM — atomic (all-or-nothing) mode, where declared. SPEC §4.

The atomic mode is reached through `endpoints.atomic` (a separate path, or the batch path with a
body field, query parameter or header that selects it); `target.atomic()` sends it. Effects are
judged by reading items back, never from what the failure response claims.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.checks import (
    expect, is_2xx, item_with_existing_id, json_of, mixed_batch, observed, openapi, response_json, setup_failed,
    short,
)


def _require_atomic(profile) -> None:
    profile.require("endpoints.atomic")


def _applied(target, ids: list[str]) -> list[str]:
    return [i for i in ids if target.exists(i)]


def _conflicting_item(target, items) -> dict[str, Any]:
    """An item whose id is already taken: it passes validation and fails only when written."""
    return item_with_existing_id(target, items, what="setup: create the item the atomic batch will collide with")


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-01", clause="an atomic batch with one invalid item applies none of its "
                  "valid items (read endpoint)")
def test_failing_item_means_nothing_applied(target, items, profile):
    """ATOM-01 MUST: if any item fails, no item is applied."""
    _require_atomic(profile)
    profile.require("endpoints.read")
    # The failing item sits between valid ones: a target that applies items one by one and stops
    # at the first failure (no rollback) leaves the earlier ones behind.
    mixed = mixed_batch(items, 3, 1)
    resp = target.atomic(mixed.items)
    applied = _applied(target, mixed.valid_ids)
    expect(not applied, "an atomic batch with a failing item applied some of its valid items",
           expected="no item readable", seen=f"answered {resp.status_code}; readable: {applied}")


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-01", clause="an atomic batch whose last item fails only when written (its "
                  "id already exists) keeps none of the items written before it")
def test_failure_at_write_time_rolls_back(target, items, profile):
    """ATOM-01 MUST: if any item fails, no item is applied."""
    _require_atomic(profile)
    profile.require("endpoints.read")
    # A conflict (id already taken) passes validation and fails only when written, last: a target
    # that validates up front but writes without a transaction keeps the items written before it.
    fresh = items.valid(3)
    clash = _conflicting_item(target, items)
    resp = target.atomic(fresh + [clash])
    # every item's outcome (also in failure-only answers, where an item left out succeeded)
    results = list(target.envelope.result_map(resp, fresh + [clash]).values()) if json_of(resp) is not None else []
    if is_2xx(resp) and results and all(r.ok for r in results):
        pytest.skip("the target does not treat an already-taken id as a failing item (upsert semantics)")
    ids = [items.id_of(f) for f in fresh]
    applied = _applied(target, ids)
    expect(not applied, "an atomic batch whose last item failed on write kept the items written before it",
           expected="no item of the batch readable", seen=f"answered {resp.status_code}; readable: {applied}")


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-01", clause="an atomic batch of limits.atomic_max_items items (as many as "
                  "limits.max_bytes allows) whose last item fails keeps none of its items: the first, middle "
                  "and last valid items are read back")
def test_failure_at_the_end_of_a_full_batch_rolls_back_all(target, items, profile):
    """ATOM-01 MUST: if any item fails, no item is applied."""
    _require_atomic(profile)
    profile.require("endpoints.read")
    limit = profile.get("limits.atomic_max_items")
    if not limit:
        pytest.skip("profile declares no limits.atomic_max_items")
    if limit < 2:
        pytest.skip(f"limits.atomic_max_items is {limit}: no room for a valid item before the failing one")
    if limit > 1000:
        pytest.skip(f"limits.atomic_max_items is {limit}: too large to send as a conformance check")
    # A target that commits a large atomic batch in several transactions (chunks of 50, say) rolls back
    # only the chunk holding the failure: the failing item comes last, the first items are read back.
    valid, bad = items.valid(limit - 1), items.invalid(1)[0].item
    max_bytes = profile.get("limits.max_bytes")
    size = len(target.batch_body(valid + [bad], endpoint="atomic"))
    if max_bytes and size > max_bytes:
        keep = max(1, int((limit - 1) * max_bytes * 0.9 / size))
        observed(f"{limit} items do not fit in limits.max_bytes ({max_bytes} bytes): the batch held {keep + 1}")
        valid = valid[:keep]
    ids = [items.id_of(v) for v in valid]
    resp = target.atomic(valid + [bad], note=f"an atomic batch of {len(valid) + 1} items, the last one failing")
    sample = list(dict.fromkeys([ids[0], ids[len(ids) // 2], ids[-1]]))
    applied = _applied(target, sample)
    expect(not applied, f"an atomic batch of {len(valid) + 1} items whose last item failed kept some of its "
           "items (committed in several transactions?)", expected=f"none of {sample} readable",
           seen=f"answered {resp.status_code}; readable: {applied}")


def _why_ok(r, inv, envelope) -> bool:
    """The result says why the item failed: its code, or a message naming the field at fault."""
    if r.error_code == inv.code:
        return True
    if r.error_code is None or r.error_code == envelope.code("not_applied"):
        return False
    text = r.error_message or json.dumps(r.error, default=str)
    return bool(inv.field) and inv.field in text


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-02", clause="the failure response identifies each failing item, reports it "
                  "failed, and says why (an error code or message)")
def test_failure_names_each_failing_item_and_why(target, items, envelope, profile):
    """ATOM-02 MUST: the failure response identifies each failing item and why, not only a batch-level message."""
    _require_atomic(profile)
    mixed = mixed_batch(items, 2, 2)
    resp = target.atomic(mixed.items)
    doc = response_json(resp, "the atomic failure response")
    by_id = envelope.result_map(doc, mixed.items)
    expect(by_id, "the atomic failure response carries no per-item results, only a batch-level answer",
           expected="a result for each failing item, with its error", seen=short(doc))
    for item_id, inv in mixed.invalid.items():
        r = by_id.get(item_id)
        expect(r is not None, f"the failing item {item_id!r} is not identified in the failure response",
               expected=f"a result with id {item_id!r}", seen=short(doc))
        expect(r.ok is False, f"the failing item {item_id!r} is not reported as failed",
               expected="an error result", seen=short(r.raw))
        expect(_why_ok(r, inv, envelope), f"the error of failing item {item_id!r} does not say why it failed",
               expected=f"code {inv.code!r} (or a message naming {inv.field!r})", seen=short(r.error or r.raw))


def _write_time_failure(target, items) -> tuple[list[dict[str, Any]], Any, list[Any], Any]:
    """An atomic batch of valid items whose last item fails only when written (its id is taken):
    (the batch, the clashing id, the other ids, the response). Validation passes for every item, so
    the failure comes from the store (a unique-key violation at INSERT), a path of its own in many
    servers. Skips where an already-taken id is not a failure (upsert semantics)."""
    fresh = items.valid(2)
    clash = _conflicting_item(target, items)
    batch = fresh + [clash]
    resp = target.atomic(batch, note="an atomic batch whose last item's id already exists")
    results = list(target.envelope.result_map(resp, batch).values()) if json_of(resp) is not None else []
    if is_2xx(resp) and results and all(r.ok for r in results):
        pytest.skip("the target does not treat an already-taken id as a failing item (upsert semantics)")
    return batch, items.id_of(clash), [items.id_of(f) for f in fresh], resp


def _says_why_it_failed(r, envelope, others: list[Any]) -> bool:
    """A failing item whose cause the kit cannot predict (a conflict: each target names it its own way)
    says why: an error code that is not the not-applied marker nor the code the items that were only
    rolled back carry, or, with no code, a message."""
    if r.error_code is not None:
        marker = set(envelope.codes("not_applied"))
        rolled_back = {o.error_code for o in others if o is not None and o.ok is False and o.error_code is not None}
        return r.error_code not in marker and r.error_code not in rolled_back
    return bool(r.error_message)


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-02", clause="an atomic batch whose last item fails only when written (its id already "
                  "exists) gets a failure response that identifies that item, reports it failed and says why, "
                  "not only a batch-level conflict")
def test_write_time_failure_names_the_failing_item(target, items, envelope, profile):
    """ATOM-02 MUST: the failure response identifies each failing item and why, not only a batch-level message."""
    _require_atomic(profile)
    # Validation failures are answered by a validator that knows every item; a unique-key clash is
    # found by the INSERT, and a handler that catches the store's error answers 409 with its text.
    batch, clash_id, other_ids, resp = _write_time_failure(target, items)
    doc = response_json(resp, "the atomic failure response")
    by_id = envelope.result_map(resp, batch)
    r = by_id.get(clash_id)
    expect(r is not None and not r.implied,
           f"the item whose id already exists ({clash_id!r}) is not identified in the failure response: only a "
           "batch-level answer", expected=f"a result with id {clash_id!r} and its error",
           seen=f"{resp.status_code}: {short(doc)}")
    expect(r.ok is False, f"the failing item {clash_id!r} is not reported as failed", expected="an error result",
           seen=short(r.raw))
    expect(_says_why_it_failed(r, envelope, [by_id.get(i) for i in other_ids]),
           f"the error of failing item {clash_id!r} does not say why it failed",
           expected="an error code of its own (its id exists), not the not-applied marker the other items carry",
           seen=short(r.error or r.raw))


def _judge_not_applied(resp, envelope, batch: list[dict[str, Any]], valid_ids: list[Any]) -> None:
    """ATOM-03 on one failed atomic batch: a 4xx, the batch said failed, every other item marked not applied."""
    expect(400 <= resp.status_code < 500, "a failed atomic batch did not get a 4xx",
           expected="4xx", seen=resp.status_code)
    doc = response_json(resp, "the atomic failure response")
    pointer = envelope.batch_status_pointer
    failed_values = envelope.failed_values
    status = envelope.batch_status(doc)
    expect(status in failed_values, "the failure response does not say the batch failed",
           expected=f"{pointer} in {failed_values}", seen=short(doc))
    by_id = envelope.result_map(doc, batch)
    not_applied = envelope.code("not_applied")
    for item_id in valid_ids:
        r = by_id.get(item_id)
        if r is None and envelope.failures_only:
            # Only failures are listed: an item left out of a failed batch is marked by the batch's status.
            observed("failure-only results: the valid items are marked not applied only by the batch's failed "
                     "status (the form lists no entry for them)")
            continue
        expect(r is not None, f"item {item_id!r} (valid, not applied) has no result in the failure response",
               expected=f"a result marking {item_id!r} not applied", seen=short(doc))
        marked = r.ok is False or not_applied in (r.status, r.error_code)
        expect(marked, f"item {item_id!r} is not marked as not applied although the batch failed",
               expected=f"an error result (e.g. {not_applied!r})", seen=short(r.raw))


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-03", clause="a failed atomic batch gets a 4xx saying the batch failed, and "
                  "every valid item is marked not applied")
def test_failure_says_not_applied(target, items, envelope, profile):
    """ATOM-03 MUST: the failure response says the batch was not applied (`"status": "failed"`, a 4xx status), and marks the other items as not applied."""
    _require_atomic(profile)
    mixed = mixed_batch(items, 3, 1)
    resp = target.atomic(mixed.items)
    _judge_not_applied(resp, envelope, mixed.items, mixed.valid_ids)


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-03", clause="an atomic batch whose last item fails only when written (its id already "
                  "exists) gets a 4xx saying the batch failed, and the items before it (written, then rolled "
                  "back) are marked not applied")
def test_write_time_failure_says_not_applied(target, items, envelope, profile):
    """ATOM-03 MUST: the failure response says the batch was not applied (`"status": "failed"`, a 4xx status), and marks the other items as not applied."""
    _require_atomic(profile)
    # The items before the clash were inserted, then rolled back: a handler that reports what the
    # insert loop collected says they are ok, and one that answers the store's error says nothing.
    batch, _clash_id, other_ids, resp = _write_time_failure(target, items)
    _judge_not_applied(resp, envelope, batch, other_ids)


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-04", clause="an all-valid atomic batch gets a 2xx, every item ok and "
                  "readable")
def test_all_valid_atomic_batch_applies_every_item(target, items, envelope, profile):
    """ATOM-04 MUST: an all-valid atomic batch applies every item (200, all ok)."""
    _require_atomic(profile)
    batch = items.valid(4)
    ids = [items.id_of(b) for b in batch]
    resp = target.atomic(batch)
    expect(is_2xx(resp) and resp.status_code != 207, "an all-valid atomic batch did not get a 2xx",
           expected="200", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    by_id = envelope.result_map(response_json(resp), batch)
    not_ok = {i: short(by_id[i].raw, 200) if i in by_id else "no result" for i in ids
              if i not in by_id or by_id[i].ok is not True}
    expect(not not_ok, "an all-valid atomic batch did not report every item ok", expected="all ok", seen=not_ok)
    if profile.has("endpoints.read"):
        missing = [i for i in ids if not target.exists(i)]
        expect(not missing, "an all-valid atomic batch answered ok but did not apply every item",
               expected="every item readable", seen=f"not readable: {missing}")


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-04", clause="an all-valid atomic batch of exactly limits.atomic_max_items "
                  "items gets a 2xx, all ok and readable")
def test_atomic_batch_at_its_limit_is_applied(target, items, envelope, profile):
    """ATOM-04 MUST: an all-valid atomic batch applies every item (200, all ok)."""
    _require_atomic(profile)
    limit = profile.get("limits.atomic_max_items")
    if not limit:
        pytest.skip("profile declares no limits.atomic_max_items")
    if limit > 1000:
        pytest.skip(f"limits.atomic_max_items is {limit}: too large to send as a conformance check")
    batch = items.valid(limit)
    ids = [items.id_of(b) for b in batch]
    resp = target.atomic(batch)
    expect(is_2xx(resp) and resp.status_code != 207,
           f"an all-valid atomic batch of exactly the declared {limit} items did not get a 2xx",
           expected="200", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    results = list(envelope.result_map(response_json(resp), batch).values())  # failure-only answers too
    bad = [r.id for r in results if r.ok is not True]
    expect(len(results) == limit and not bad, f"an all-valid atomic batch of {limit} items was not all ok",
           expected=f"{limit} ok results", seen=f"{len(results)} results, not ok: {bad[:10]}")
    if profile.has("endpoints.read"):
        sample = sorted({ids[0], ids[len(ids) // 2], ids[-1]})
        missing = [i for i in sample if not target.exists(i)]
        expect(not missing, "an atomic batch at its limit answered ok but did not apply its items",
               expected="first, middle and last item readable", seen=f"not readable: {missing}")


# -- ATOM-05: explicit and documented ------------------------------------------------------------

_SELECTORS = ("path", "method", "body", "query", "headers")


def _selection(ep: dict[str, Any]) -> dict[str, Any]:
    return {k: ep.get(k) or None for k in _SELECTORS if k != "method"} | {"method": ep.get("method", "POST")}


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-05", clause="the atomic mode has its own endpoint or flag (endpoints.atomic "
                  "is not the plain batch endpoint)")
def test_atomic_mode_is_explicit(profile):
    """ATOM-05 SHOULD: the atomic mode is explicit per endpoint or per request, and documented."""
    _require_atomic(profile)
    atomic, batch = profile.get("endpoints.atomic"), profile.get("endpoints.batch")
    expect(_selection(atomic) != _selection(batch),
           "the atomic mode is not selected explicitly: endpoints.atomic is the batch endpoint itself",
           expected="a separate path, or a body field, query parameter or header selecting the atomic mode",
           seen={"atomic": atomic, "batch": batch})


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-05", clause="a mixed batch to the non-atomic endpoint applies its valid "
                  "items (atomic is not the default)")
def test_atomic_is_not_the_silent_default(target, items, profile):
    """ATOM-05 SHOULD: the atomic mode is explicit per endpoint or per request, and documented."""
    _require_atomic(profile)
    profile.require("endpoints.read")
    # A mixed batch sent WITHOUT the atomic selector: if the valid items are not applied, the
    # target is all-or-nothing although nobody asked for it.
    mixed = mixed_batch(items, 2, 1)
    resp = target.batch(mixed.items)
    applied = _applied(target, mixed.valid_ids)
    expect(applied == mixed.valid_ids,
           "a mixed batch sent to the non-atomic endpoint applied none/not all of its valid items: "
           "atomic is the silent default",
           expected=f"{mixed.valid_ids} readable", seen=f"answered {resp.status_code}; readable: {applied}")


def _negated_selector(profile) -> dict[str, bool]:
    """The atomic selector's boolean body members, negated, where the atomic mode is the batch endpoint
    with body members added (`"atomic": true`): the request that explicitly asks for the other mode."""
    batch, atomic = profile.get("endpoints.batch") or {}, profile.get("endpoints.atomic") or {}
    same = all((batch.get(k) or None) == (atomic.get(k) or None) for k in ("path", "query", "headers")) \
        and str(batch.get("method", "POST")).upper() == str(atomic.get("method", "POST")).upper()
    members = {k: v for k, v in (atomic.get("body") or {}).items() if (batch.get("body") or {}).get(k) != v}
    if not same or not members:
        pytest.skip("endpoints.atomic is not the batch endpoint plus a body member: no selector value to negate")
    flags = {k: not v for k, v in members.items() if isinstance(v, bool)}
    if not flags:
        pytest.skip(f"the atomic selector {members} is not a boolean: no explicit 'off' value to send")
    return flags


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-05", clause="where the atomic mode is a boolean body member, a mixed batch sent with that "
                  "member explicitly negated (\"atomic\": false) applies its valid items: the selector is read "
                  "by value, not by presence")
def test_atomic_selector_false_is_not_atomic(target, items, profile):
    """ATOM-05 SHOULD: the atomic mode is explicit per endpoint or per request, and documented."""
    _require_atomic(profile)
    profile.require("endpoints.read")
    off = _negated_selector(profile)
    # A server that tests for the member's presence (`"atomic" in body`) makes a request that says
    # "not atomic" all-or-nothing: the client asked explicitly and got the other mode.
    mixed = mixed_batch(items, 2, 1)
    resp = target.batch(mixed.items, extra=off, note=f"a mixed batch with {off} (the atomic selector, negated)")
    applied = _applied(target, mixed.valid_ids)
    expect(applied == mixed.valid_ids,
           f"a mixed batch sent with {off} applied none/not all of its valid items: the atomic selector is read "
           "by presence, not by value", expected=f"{mixed.valid_ids} readable",
           seen=f"answered {resp.status_code}; readable: {applied}")


def _path_of(profile, name: str) -> str:
    return profile.get(f"endpoints.{name}.path")


def _mentions_atomic(node: Any) -> bool:
    return isinstance(node, dict) and any(isinstance(k, str) and k.lower().startswith("x-") and "atomic" in k.lower()
                                          for k in node)


@pytest.mark.concurrent
@pytest.mark.rule("ATOM-05", clause="the OpenAPI document describes the atomic endpoint or flag")
def test_atomic_mode_is_documented(target, profile):
    """ATOM-05 SHOULD: the atomic mode is explicit per endpoint or per request, and documented."""
    _require_atomic(profile)
    if not (profile.has("openapi_file") or profile.has("endpoints.openapi")):
        pytest.skip("no OpenAPI document declared (endpoints.openapi, openapi_file): the profile's "
                    "endpoints.atomic is the only documentation the kit can see")
    doc, where = openapi.load(target, profile)
    if doc is None:
        setup_failed(f"the OpenAPI document could not be read: {where}")
    ep = profile.get("endpoints.atomic")
    method = ep.get("method", "POST")
    found = openapi.find(doc, method, _path_of(profile, "atomic"))
    expect(found is not None, "the OpenAPI document does not describe the atomic endpoint",
           expected=f"{method} {_path_of(profile, 'atomic')} in paths", seen=sorted((doc.get("paths") or {}).keys()))
    path_item, op = found
    where: list[str] = []
    if _mentions_atomic(op) or _mentions_atomic(path_item):
        where.append("an x-...atomic extension on the operation")
    batch_x = doc.get("x-batch")
    if isinstance(batch_x, dict) and any("atomic" in str(k).lower() for k in batch_x):
        where.append("x-batch")
    props = openapi.request_property_names(doc, op)
    selectors = set((ep.get("body") or {}).keys())
    if selectors & props:
        where.append(f"request property {sorted(selectors & props)}")
    params = {(openapi.deref(doc, p) or {}).get("name", "").lower()
              for p in (op.get("parameters") or []) + (path_item.get("parameters") or [])}
    named = {k.lower() for k in list((ep.get("query") or {}).keys()) + list((ep.get("headers") or {}).keys())}
    if named and named <= params:
        where.append(f"parameters {sorted(named)}")
    separate = _path_of(profile, "atomic") != _path_of(profile, "batch")
    if separate:
        where.append("its own documented operation")  # explicit per endpoint
    expect(where, "the OpenAPI document does not document the atomic mode",
           expected="an x-batch-atomic extension, or the selecting field/parameter in the batch request",
           seen=f"{method} {_path_of(profile, 'atomic')}: no atomic extension; request properties "
                f"{sorted(props)}; parameters {sorted(p for p in params if p)}")
