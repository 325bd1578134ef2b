"""ORD — ordering and dependencies, where declared. SPEC §4.

The profile names the item field listing dependencies (`dependencies.field`, e.g. `depends_on`)
and, where the target has one, a field that references another item's id and requires it to exist
(`dependencies.reference_field`, e.g. `parent_id`): that is what makes the processing order
observable. Effects are judged by reading items back.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from conformance.checks import (
    as_stored, expect, is_2xx, json_of, mixed_batch, observed, pointer_get, response_json, setup_ok, short,
    without_fields,
)

# A 3-item batch with a cycle must be answered well within this; waiting longer for a hang is waste.
CYCLE_TIMEOUT_S = 5.0


def _dep_field(profile) -> str:
    profile.require("dependencies.field")
    return profile.get("dependencies.field")


_NONE = object()


def _differences(item: dict[str, Any], got: Any, skip: set[str], id_pointer: str | None = None) -> dict[str, Any]:
    """The members of `got` (an ok result's data or a resource read back; server fields and the id
    aside) that `item` does not hold with that value. Only what `got` shows is compared: a server
    need not echo every member, and a member it adds (a default, a status) counts alike against every
    item, so the counts of two items compare fairly."""
    if not isinstance(got, dict):
        return {}
    mine = without_fields(as_stored(item, got, id_pointer), skip)  # a DynamoDB-like /Put/Item
    theirs = without_fields(got, skip)
    return {k: v for k, v in theirs.items() if not isinstance(mine, dict) or k not in mine or mine[k] != v}


def _id_shown(item: dict[str, Any], got: Any, id_pointer: str | None) -> Any:
    """The id `got` carries where it shows the item's id (the id pointer, taken below the part of
    the item that `got` shows, as `as_stored` picks it); _NONE where it carries none."""
    if not isinstance(got, dict) or not id_pointer:
        return _NONE
    raw = id_pointer[1:].split("/")  # escaped tokens: joined back into pointers unchanged
    for depth in range(len(raw)):
        node = pointer_get(item, "/" + "/".join(raw[:depth]) if depth else "", None)
        if not isinstance(node, dict):
            break
        if node and set(node) <= set(got):
            return pointer_get(got, "/" + "/".join(raw[depth:]), _NONE)
    return pointer_get(got, id_pointer, _NONE)


def _same_id(a: Any, b: Any) -> bool:
    """Ids compare as text: a server may answer "7" as 7 (the kit's ids are strings)."""
    return a == b or (isinstance(a, (str, int)) and isinstance(b, (str, int)) and not isinstance(a, bool)
                      and not isinstance(b, bool) and str(a) == str(b))


def _belongs_elsewhere(item_id: Any, got: Any, batch: dict[Any, dict[str, Any]], items, skip: set[str]) -> str | None:
    """Why `got` (the data of the ok result carrying `item_id`, or the resource read under it) is
    another item's, or None. Two signs, neither of which a legal answer shows: the id it carries
    names another item the kit sent (the only member that tells apart items with the same payload),
    or its values match another item of the batch strictly better than its own. A value the server
    normalises ("12.50" for 12.5) differs from its own item's, but matches no other item better:
    PAR-01 judges such values against the single endpoint, not this rule."""
    shown = _id_shown(batch[item_id], got, items.id_pointer)
    if shown is not _NONE and not _same_id(shown, item_id):
        named = [i for i in batch if _same_id(shown, i)]
        # An id the kit made for another item (its run prefix), not a server-made one: data from
        # another batch (a cache keyed by payload) is as wrong as data from a sibling.
        if named or (isinstance(shown, str) and items.prefix and shown.startswith(items.prefix)):
            return f"it carries the id {shown!r}, " + ("another item of this batch" if named else
                                                       "an item the kit sent elsewhere")
    own = _differences(batch[item_id], got, skip, items.id_pointer)
    if not own:
        return None
    closer = {i: _differences(it, got, skip, items.id_pointer) for i, it in batch.items() if i != item_id}
    best = min(closer, key=lambda i: len(closer[i]), default=None)
    if best is not None and len(closer[best]) < len(own):
        return (f"its values match {best!r} better than its own item (differs from its own in {own}, from "
                f"{best!r} in {closer[best] or 'nothing'})")
    return None


def _same_payloads(items, ids: list[Any], by_item: dict[Any, dict[str, Any]]) -> bool:
    """Whether two of the items `ids` name are alike but for their id."""
    seen = set()
    for i in ids:
        bare = items.set_id(copy.deepcopy(by_item[i]), None) if items.has_ids else by_item[i]
        seen.add(json.dumps(bare, sort_keys=True, default=str))
    return len(seen) < len(ids)


@pytest.mark.concurrent
@pytest.mark.rule("ORD-01", clause="results of independent items are correlated by id: no ok result's data, and "
                  "no item read back, is another item's (carries another item's id, or matches another item of "
                  "the batch better than its own), no invalid item's id applied")
def test_independent_items_correlated_by_id(target, items, envelope, profile):
    """ORD-01 MUST: independent items are correlated by id, whatever the processing order."""
    mixed = mixed_batch(items, 6, 4)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch of independent items")
    by_id = envelope.result_map(response_json(resp), mixed.items)
    missing = [i for i in mixed.ids if i not in by_id]
    expect(not missing, "some items have no result carrying their id", expected=mixed.ids, seen=f"missing: {missing}")
    # The id is left out of the values compared: it is judged on its own (_belongs_elsewhere).
    skip = set(profile.get("items.server_fields") or []) | ({items.id_field} if items.id_field else set())
    wrong: dict[str, Any] = {}
    by_item = {items.id_of(it): it for it in mixed.items}
    data_seen = ids_seen = 0
    for item_id in mixed.valid_ids:
        r = by_id[item_id]
        if r.ok is not True:
            wrong[item_id] = f"valid item got {short(r.raw, 200)}"
            continue
        why = _belongs_elsewhere(item_id, r.data, by_item, items, skip)
        if why:
            wrong[item_id] = f"result data belongs to another item: {why}"
        if isinstance(r.data, dict):
            data_seen += 1
            ids_seen += _id_shown(by_item[item_id], r.data, items.id_pointer) is not _NONE
    for item_id, inv in mixed.invalid.items():
        r = by_id[item_id]
        if r.ok is not False:
            wrong[item_id] = f"invalid item ({inv.code}) got {short(r.raw, 200)}"
        elif r.error_code not in (None, inv.code) and r.error_code in {i.code for i in mixed.invalid.values()}:
            wrong[item_id] = f"error {r.error_code!r} is another item's (expected {inv.code!r})"
    expect(not wrong, "results are not correlated with their items by id", expected="each result describes "
           "the item whose id it carries", seen=wrong)
    if not data_seen:
        observed("ok results carry no data object: whose item a result describes was judged by its id and "
                 "outcome only" + ("" if profile.has("endpoints.read") else " (and no endpoints.read)"))
    elif not ids_seen and _same_payloads(items, mixed.valid_ids, by_item):
        # Items with one payload differ only by their id: without it, their data look alike.
        observed("ok results' data carry no item id: the data of valid items with the same payload could "
                 "not be told apart")
    if profile.has("endpoints.read"):
        for item_id in mixed.valid_ids:
            stored = target.read_json(item_id)
            expect(stored is not None, f"the result of {item_id!r} says ok but the item is not readable",
                   expected="readable", seen="absent")
            why = _belongs_elsewhere(item_id, stored, by_item, items, skip)
            expect(not why, f"the item stored under {item_id!r} holds another item's values: {why}",
                   expected=as_stored(by_item[item_id], stored, items.id_pointer), seen=stored)
        applied = [i for i in mixed.invalid if target.exists(i)]
        expect(not applied, "an invalid item's id was applied (results and effects swapped between items)",
               expected="invalid items absent", seen=applied)


def _chain(items, profile, n: int) -> list[dict[str, Any]]:
    """n items, each depending on (and referencing) the one before it; returned dependents first."""
    dep_field = profile.get("dependencies.field")
    ref_field = profile.get("dependencies.reference_field")
    chain = items.valid(n)
    for prev, cur in zip(chain, chain[1:]):
        cur[dep_field] = [items.id_of(prev)]
        if ref_field:
            cur[ref_field] = items.id_of(prev)
    return list(reversed(chain))


@pytest.mark.concurrent
@pytest.mark.rule("ORD-02", clause="dependents listed before their dependencies (chains of 2 and 3) are all ok and "
                  "readable; with dependencies.reference_field, each references its dependency, which shows it ran "
                  "after it (without it, the order is not observed and the PASS says so)")
@pytest.mark.parametrize("length", [2, 3])
def test_dependent_runs_after_its_dependency(target, items, envelope, profile, length):
    """ORD-02 MUST: a dependency is explicit (`depends_on: [ids]` on the item); a dependent item runs after its dependency and may reference its result."""
    _dep_field(profile)
    ref_field = profile.get("dependencies.reference_field")
    # Dependents come BEFORE their dependencies in the request: only a target that orders by
    # depends_on can apply the referencing items.
    batch = _chain(items, profile, length)
    ids = [items.id_of(b) for b in batch]
    resp = target.batch(batch)
    expect(is_2xx(resp), "a batch with explicit dependencies was not processed",
           expected="2xx", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    by_id = envelope.result_map(response_json(resp), batch)
    not_ok = {i: short(by_id[i].raw, 300) if i in by_id else "no result" for i in ids
              if i not in by_id or by_id[i].ok is not True}
    expect(not not_ok, "an item listed before its dependency failed: the dependency did not run first",
           expected="every item ok", seen=not_ok)
    if profile.has("endpoints.read"):
        for item in batch:
            stored = target.read_json(items.id_of(item))
            expect(stored is not None, f"{items.id_of(item)!r} was reported ok but is not readable",
                   expected="readable", seen="absent")
            if ref_field and ref_field in item and isinstance(stored, dict) and ref_field in stored:
                expect(stored[ref_field] == item[ref_field],
                       f"{items.id_of(item)!r} does not reference its dependency",
                       expected={ref_field: item[ref_field]}, seen={ref_field: stored[ref_field]})
    if not ref_field:
        # Without an item that needs its dependency to exist, a target that ignores depends_on and
        # applies in request order succeeds too: the order of application was not observed.
        observed("the order of application was not observed: the profile declares no "
                 "dependencies.reference_field (an item field that requires the referenced item to exist), so "
                 "only that a batch listing dependents before their dependencies succeeded was checked")


@pytest.mark.concurrent
@pytest.mark.rule("ORD-02", clause="a dependent listed before its two dependencies (depends_on [a, b]) and "
                  "referencing b, the second, is ok and readable: every dependency runs first, not only the "
                  "first listed (without dependencies.reference_field: that it succeeds and is applied, and "
                  "the PASS says the order was not observed)")
def test_dependent_runs_after_every_dependency(target, items, envelope, profile):
    """ORD-02 MUST: a dependency is explicit (`depends_on: [ids]` on the item); a dependent item runs after its dependency and may reference its result."""
    dep_field = _dep_field(profile)
    ref_field = profile.get("dependencies.reference_field")
    first, second, dependent = items.valid(3)
    dependent[dep_field] = [items.id_of(first), items.id_of(second)]
    if ref_field:
        dependent[ref_field] = items.id_of(second)
    else:
        # Without a reference the order cannot show; two dependencies listed after their dependent
        # must still be taken (ok and applied), and the PASS says what was not observed.
        observed("no dependencies.reference_field: the order of application was not observed; the item with "
                 "two dependencies listed after it was checked to succeed and be applied")
    batch = [dependent, first, second]  # the dependent first: only its depends_on can order the batch
    did = items.id_of(dependent)
    resp = target.batch(batch)
    expect(is_2xx(resp), "a batch with an item depending on two others was not processed",
           expected="2xx", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    r = envelope.result_map(response_json(resp), batch).get(did)
    expect(r is not None and r.ok is True, "an item depending on two others failed: its second dependency "
           "(the one it references) did not run first", expected="ok", seen=short(r.raw, 300) if r else "no result")
    if profile.has("endpoints.read"):
        expect(target.exists(did), f"{did!r} was reported ok but is not readable", expected="readable",
               seen="absent")


def _names(r, dep_id: str) -> bool:
    text = " ".join(filter(None, [r.error_message, json.dumps(r.error, default=str) if r.error is not None else None]))
    return dep_id in text


@pytest.mark.concurrent
@pytest.mark.rule("ORD-03", clause="an item depending on a failed item fails with dependency_failed "
                  "naming it (and its dependent too, and an item whose second dependency failed), and is not "
                  "applied")
def test_failed_dependency_fails_dependents(target, items, envelope, profile):
    """ORD-03 MUST: if a dependency fails, the dependent item fails with `dependency_failed` naming it, and is not applied."""
    dep_field = _dep_field(profile)
    parent = items.invalid(1)[0].item
    parent_id = items.id_of(parent)
    # No reference to the parent: the dependent would succeed on its own, so only the declared
    # dependency can make it fail. The grandchild checks that failure propagates.
    child = items.one()
    child[dep_field] = [parent_id]
    grandchild = items.one()
    grandchild[dep_field] = [items.id_of(child)]
    bystander = items.one()
    # Two dependencies, the failing one listed second: every dependency counts, not only the first.
    sibling = items.one()
    sibling[dep_field] = [items.id_of(bystander), parent_id]
    batch = [parent, child, bystander, grandchild, sibling]
    resp = setup_ok(target.batch(batch), "a batch with a failing dependency")
    by_id = envelope.result_map(response_json(resp), batch)
    code = envelope.code("dependency_failed")
    for dependent, deps in ((child, [parent_id]), (grandchild, [items.id_of(child), parent_id]),
                            (sibling, [parent_id])):
        did = items.id_of(dependent)
        r = by_id.get(did)
        expect(r is not None, f"the dependent item {did!r} has no result", expected=f"a result for {did!r}",
               seen=short(resp.text))
        expect(r.ok is False and r.error_code == code,
               f"{did!r} depends on a failed item but did not fail with {code!r}",
               expected=f"error {code!r}", seen=short(r.raw))
        expect(any(_names(r, d) for d in deps), f"the {code!r} error of {did!r} does not name its dependency",
               expected=f"an error naming {deps[0]!r}", seen=short(r.error))
    if profile.has("endpoints.read"):
        applied = [items.id_of(d) for d in (parent, child, grandchild, sibling) if target.exists(items.id_of(d))]
        expect(not applied, "an item whose dependency failed was applied", expected="not readable", seen=applied)


def _clear_error(target, envelope, batch: list[dict[str, Any]], bad_ids: list[str], must_name: str | None,
                 what: str) -> httpx.Response:
    """Send `batch`; `bad_ids` must get a clear error (per item or 4xx), never 5xx or a hang."""
    try:
        resp = target.batch(batch, timeout=min(CYCLE_TIMEOUT_S, target.timeout), note=what)
    except httpx.TimeoutException:
        # The hang is the violation here, not a failure of the kit.
        expect(False, f"{what}: the target did not answer (it hangs)",
               expected=f"an answer within {min(CYCLE_TIMEOUT_S, target.timeout):g}s", seen="timeout")
        raise  # unreachable
    expect(resp.status_code < 500, f"{what}: the target answered {resp.status_code}",
           expected="a clear error: per-item error results or a 4xx", seen=short(resp.text, 300))
    doc = json_of(resp)
    if 400 <= resp.status_code < 500:
        expect(doc is not None, f"{what}: the 4xx carries no JSON error", expected="a JSON error body",
               seen=short(resp.text, 300))
        if must_name:
            expect(must_name in resp.text, f"{what}: the 4xx does not name the offending id",
                   expected=f"a body naming {must_name!r}", seen=short(resp.text, 300))
        return resp
    expect(is_2xx(resp) and doc is not None, f"{what}: neither a 4xx nor a processed batch",
           expected="per-item errors or a 4xx", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    by_id = envelope.result_map(doc, batch)
    for item_id in bad_ids:
        r = by_id.get(item_id)
        expect(r is not None and r.ok is False and (r.error_code or r.error_message),
               f"{what}: item {item_id!r} did not get an error", expected="an error result with a code",
               seen=short(r.raw) if r else "no result")
        if must_name:
            expect(_names(r, must_name), f"{what}: the error of {item_id!r} does not name the offending id",
                   expected=f"an error naming {must_name!r}", seen=short(r.error))
    return resp


@pytest.mark.concurrent
@pytest.mark.rule("ORD-04", clause="an item depending on an unknown id gets a clear error (4xx or "
                  "item error) and is not applied")
def test_unknown_dependency_gets_clear_error(target, items, envelope, profile):
    """ORD-04 MUST: a dependency on an unknown id, or a cycle, gets a clear error (per item or 4xx), never 5xx or a hang."""
    dep_field = _dep_field(profile)
    ghost = items.new_id()
    orphan = items.one()
    orphan[dep_field] = [ghost]
    batch = [items.one(), orphan]
    _clear_error(target, envelope, batch, [items.id_of(orphan)], ghost, "a dependency on an unknown id")
    if profile.has("endpoints.read"):
        expect(not target.exists(items.id_of(orphan)), "the item depending on an unknown id was applied",
               expected="not readable", seen="readable")


@pytest.mark.concurrent
@pytest.mark.rule("ORD-04", clause="items in a dependency cycle (1 long: an item depending on itself; 2 "
                  "and 3 long) get a clear error, promptly, and none is applied")
@pytest.mark.parametrize("length", [1, 2, 3])
def test_cycle_gets_clear_error(target, items, envelope, profile, length):
    """ORD-04 MUST: a dependency on an unknown id, or a cycle, gets a clear error (per item or 4xx), never 5xx or a hang."""
    dep_field = _dep_field(profile)
    ring = items.valid(length)
    for k, item in enumerate(ring):  # each depends on the next, the last on the first (length 1: on itself)
        item[dep_field] = [items.id_of(ring[(k + 1) % length])]
    ids = [items.id_of(r) for r in ring]
    _clear_error(target, envelope, ring, ids, None, f"a {length}-cycle of dependencies")
    if profile.has("endpoints.read"):
        applied = [i for i in ids if target.exists(i)]
        expect(not applied, f"items of a {length}-cycle were applied", expected="none readable", seen=applied)
