"""CORE — envelope and per-item results (always on). SPEC §4."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from conformance.checks import (
    is_code, is_2xx, observed, schema_errors,
    canonical_results, expect, mixed_batch, response_json, setup_ok, short,
)

MACHINE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]*$")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-01", clause="a batch of valid items gets a 2xx other than 207 with a JSON "
                  "body")
def test_valid_batch_gets_2xx_and_json(target, items):
    """CORE-01 MUST: a well-formed batch of valid items gets a 2xx (not 207) and a JSON body."""
    resp = target.batch(items.valid(3))
    expect(200 <= resp.status_code < 300 and resp.status_code != 207,
           "a batch of valid items did not get a 2xx (207 does not count)",
           expected="2xx other than 207", seen=resp.status_code)
    response_json(resp, "the batch response")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-02", clause="a mixed batch gets exactly one result per item, each echoing "
                  "its item's id, none invented")
def test_one_result_per_item(target, items, envelope):
    """CORE-02 MUST: exactly one result per item, each echoing its item's `id`; none missing, duplicated, invented."""
    mixed = mixed_batch(items, 3, 2)
    resp = target.batch(mixed.items)
    # A batch refused as a whole for one bad item has no result per item: that is this rule's FAIL.
    expect(200 <= resp.status_code < 300, "a batch with invalid items was refused as a whole: no result per item",
           expected="2xx with one result per item", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    doc = response_json(resp)
    results = envelope.results(resp)
    if envelope.failures_only:
        _one_failure_per_failed_item(envelope, mixed, doc, results)
        return
    expect(len(results) == len(mixed.items), "the number of results differs from the number of items",
           expected=f"{len(mixed.items)} results", seen=f"{len(results)} results")
    if envelope.by_position:
        return  # results carry no id; CORE-09 checks length and order
    ids = [r.id for r in results]
    dup = [i for i, n in Counter(ids).items() if n > 1]
    missing = [i for i in mixed.ids if i not in ids]
    invented = [i for i in ids if i not in mixed.ids]
    expect(not dup, "an item has more than one result", expected="one result per id", seen=f"duplicated: {dup}")
    expect(not missing, "an item has no result echoing its id", expected=mixed.ids, seen=f"missing: {missing}")
    expect(not invented, "a result carries an id that no item had", expected=mixed.ids, seen=f"invented: {invented}")


def _one_failure_per_failed_item(envelope, mixed, doc, results) -> None:
    """CORE-02 where the answer lists only the failures (results_mode: failures_only): an item absent
    from the list succeeded, so a missing ok result cannot be seen; what can be seen is judged: each
    failure entry answers one item sent (none invented), no item has two, and every item the profile
    says is invalid has one (its absence would claim it succeeded)."""
    expect(envelope.raw_results(doc) is not None, "the failures are not where, or in the form, the profile says",
           expected=envelope.results_location, seen=short(doc, 300))
    ids = [envelope.entry_id(r, mixed.items) for r in results]
    invented = [r.extra.get("index") if envelope.by_position else r.id for r, i in zip(results, ids)
                if i is None or i not in mixed.ids]
    expect(not invented, "a failure entry answers no item of the batch (an invented result)",
           expected=f"entries for items of {mixed.ids}", seen=f"invented: {invented}")
    dup = [i for i, n in Counter(ids).items() if n > 1]
    expect(not dup, "an item has more than one failure entry", expected="one entry per failed item",
           seen=f"duplicated: {dup}")
    missing = [i for i in mixed.invalid if i not in ids]
    expect(not missing, "an invalid item has no failure entry (its absence claims it succeeded)",
           expected=f"a failure entry for each of {list(mixed.invalid)} ({envelope.results_location})",
           seen=f"missing: {missing}")
    observed("failure-only results: a valid item's result is the absence of an entry, so only the failures "
             "(none missing, duplicated or invented) were observed, not a result per valid item")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-03", clause="each result is ok with data (valid items) or error with an "
                  "error object (invalid items)")
def test_result_status_and_payload(target, items, envelope):
    """CORE-03 MUST: each result has `status` ok or error; ok carries `data`, error carries `error`."""
    mixed = mixed_batch(items, 3, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    results = envelope.results(response_json(resp))
    if envelope.failures_only:
        observed("failure-only results: an ok item has no entry, so no ok result's data was observed")
    else:
        expect(results, "the response holds no results", expected="one result per item", seen=short(resp.text))
    for r in results:
        expect(r.ok is not None, f"result {r.id!r} has a status that is neither ok nor error",
               expected=f"one of {envelope.status_values}", seen=r.status)
        if r.ok:
            expect(r.data is not None, f"ok result {r.id!r} carries no data", expected="data", seen=short(r.raw))
        else:
            expect(r.error is not None or r.error_code is not None,
                   f"error result {r.id!r} carries no error", expected="error", seen=short(r.raw))
    by_id = envelope.result_map(resp, mixed.items)
    wrong = [i for i in mixed.valid_ids if i in by_id and by_id[i].ok is not True]
    wrong += [i for i in mixed.invalid if i in by_id and by_id[i].ok is not False]
    expect(not wrong, "a result's status contradicts the item (valid item not ok, or invalid item not error)",
           expected="valid items ok, invalid items error", seen={i: by_id[i].status for i in wrong})


@pytest.mark.concurrent
@pytest.mark.rule("CORE-04", clause="each error result carries a machine-readable code and a "
                  "message")
def test_error_is_object_with_code_and_message(target, items, envelope):
    """CORE-04 SHOULD: an error result's `error` is an object with a machine-readable `code` and a `message`."""
    mixed = mixed_batch(items, 1, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    by_id = envelope.result_map(response_json(resp), mixed.items)
    for item_id in mixed.invalid:
        r = by_id.get(item_id)
        if r is None or r.ok is not False:
            pytest.skip("invalid items got no error result (CORE-02/CORE-03 report that)")
        # a number (JSON-RPC's -32601) is as machine-readable as a snake_case string
        expect(is_code(r.error_code) and (not isinstance(r.error_code, str) or MACHINE_CODE.match(r.error_code)),
               f"the error of {item_id!r} has no machine-readable code",
               expected="error.code like 'invalid_amount'", seen=short(r.error if r.error is not None else r.raw))
        expect(isinstance(r.error_message, str) and r.error_message.strip(),
               f"the error of {item_id!r} has no message", expected="error.message", seen=short(r.error))


@pytest.mark.concurrent
@pytest.mark.rule("CORE-05", clause="results come in request order (split ok/error lists: each in "
                  "request order)")
def test_results_in_request_order(target, items, envelope):
    """CORE-05 SHOULD: results come in request order."""
    if envelope.by_position:
        pytest.skip("position-correlated target: CORE-09 checks the order")
    mixed = mixed_batch(items, 4, 3)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    results = envelope.results(response_json(resp))
    ids = [r.id for r in results]
    if envelope.failures_only:
        # Only the failures are listed: each list (each member of a map) keeps the request order of its items.
        lists: dict[Any, list[Any]] = {}
        for r in results:
            item_id = envelope.entry_id(r, mixed.items)
            if item_id in mixed.ids:  # an entry for no item sent is CORE-02's to report
                lists.setdefault(None if envelope.failures_by_id else r.extra.get("map_key"), []).append(item_id)
        wrong = {k: v for k, v in lists.items() if v != [i for i in mixed.ids if i in v]}
        expect(not wrong, "failure entries are not in request order", expected=mixed.ids, seen=wrong)
        if not results:
            observed("the failure list was empty: no order to observe")
        return
    if envelope.split_results:
        # Separate success and failure lists: each list keeps the request order of its items.
        ids = [i for i in ids if i in mixed.valid_ids] + [i for i in ids if i not in mixed.valid_ids]
        want = mixed.valid_ids + [i for i in mixed.ids if i not in mixed.valid_ids]
        expect(ids == want, "results in the success and failure lists are not in request order",
               expected=want, seen=ids)
        return
    expect(ids == mixed.ids, "results are not in request order", expected=mixed.ids, seen=ids)


@pytest.mark.concurrent
@pytest.mark.rule("CORE-06", clause="the batch response is labelled JSON, has its result list where "
                  "the profile says, and validates against the batch-response "
                  "schema (in canonical form)")
def test_response_validates_and_is_json(target, items, envelope):
    """CORE-06 MUST: the response validates against the batch-response schema; Content-Type is JSON."""
    mixed = mixed_batch(items, 2, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    expect(envelope.is_json(resp), "the batch response's Content-Type is not JSON",
           expected="application/json (or +json)", seen=resp.headers.get("content-type"))
    doc = response_json(resp)
    expect(envelope.raw_results(doc) is not None, "the response has no result list where the profile says",
           expected=envelope.results_location, seen=short(doc))
    # Failure-only answers: the failure entries, re-expressed, must validate (an ok item has no entry).
    errs = schema_errors("batch-response.schema.json", doc if envelope.canonical else
                           canonical_results([r for r in envelope.result_map(doc, mixed.items).values() if not r.implied]
                                             if envelope.failures_only else envelope.results(doc), mixed.ids))
    expect(not errs, "the response does not validate against the batch-response schema",
           expected="schemas/batch-response.schema.json", seen="; ".join(errs[:5]))


@pytest.mark.concurrent
@pytest.mark.rule("CORE-07", clause="a batch with a duplicated id gets a 4xx naming the id (or an error result for "
                  "each duplicate), and the read endpoint shows neither the duplicated id nor, after a 4xx, any "
                  "other item of the batch applied")
def test_duplicate_ids_rejected_before_applying(target, items, envelope, profile):
    """CORE-07 MUST: duplicate item ids in one batch are rejected before anything is applied: a 4xx naming the id (or, where declared, an error result for each duplicate)."""
    if not items.has_ids:
        pytest.skip("items carry no id (items.id_field: null): a batch cannot repeat an id, and the kit "
                    "does not borrow another field for one")
    first, other = items.valid(2)
    twin = dict(items.valid(1)[0])
    items.set_id(twin, items.id_of(first))
    _judge_duplicate_batch(target, items, envelope, profile, [first, other, twin], "byte-identical twins")
    # The same id with different payloads too: a server that finds duplicates by comparing whole items
    # (a set of their JSON) misses these. The twin is another items.valid template given the first item's
    # id: each template is valid on its own, so only the repeated id is wrong. With a single template (or
    # templates that differ only in their id) the kit has no second valid payload of its own to send and
    # invents none: only the identical twins are judged.
    tpls = items.templates()
    base = items.with_id(tpls[0], "same-id")
    differing = next((t for t in tpls[1:] if items.with_id(t, "same-id") != base), None)
    if differing is None:
        observed("the profile gives one distinct items.valid template: a twin with the same id and a different "
                 "payload was not sent (the kit invents no valid payload)")
        return
    first, other = items.valid(2)
    twin = items.with_id(differing, items.id_of(first))
    _judge_duplicate_batch(target, items, envelope, profile, [first, other, twin], "twins with different payloads")


def _judge_duplicate_batch(target, items, envelope, profile, batch: list[Any], what: str) -> None:
    """CORE-07 on one batch [first, other, twin], the twin repeating the first item's id."""
    first, other, twin = batch
    dup_id = items.id_of(first)
    resp = target.batch(batch, note=f"CORE-07: a duplicated id ({what})")
    per_item = False
    if 400 <= resp.status_code < 500:
        expect(dup_id in resp.text, f"the 4xx does not name the duplicated id ({what})",
               expected=f"a body naming {dup_id!r}", seen=short(resp.text))
    else:
        expect(200 <= resp.status_code < 300 and resp.status_code != 207,
               f"a batch with a duplicated id ({what}) was neither rejected with a 4xx nor answered per item",
               expected="4xx naming the id", seen=resp.status_code)
        expect(envelope.duplicate_ids == "per_item",
               f"a batch with a duplicated id ({what}) was not rejected (the profile does not declare per-item "
               "errors for duplicates: envelope.duplicate_ids: per_item)",
               expected="4xx naming the id", seen=f"{resp.status_code}: {short(resp.text, 300)}")
        results = envelope.results(response_json(resp))
        if envelope.failures_only:  # only failures are listed: each twin needs its own entry
            dups = [r for r in results if envelope.entry_id(r, batch) == dup_id]
            # a map keyed by item id holds one member per id: that one entry answers both twins
            expect(len(dups) >= (1 if envelope.failures_by_id else 2),
                   f"a duplicated id ({what}) was processed: the failures do not list each twin",
                   expected=f"a failure entry for each of the 2 items with id {dup_id!r}",
                   seen=[short(r.raw) for r in dups] or "no failure entry for the id")
        elif envelope.by_position:  # the twins' results are at their positions (0 and 2), with or without ids
            dups = [results[i] for i in (0, 2) if i < len(results)]
        else:
            dups = [r for r in results if r.id == dup_id]
        expect(dups and all(r.ok is False for r in dups),
               f"a duplicated id ({what}) was processed: its results are not all errors",
               expected=f"an error result for each item with id {dup_id!r}", seen=[short(r.raw) for r in dups])
        per_item = True
    if profile.has("endpoints.read"):
        expect(not target.exists(dup_id), f"an item with the duplicated id was applied ({what})",
               expected=f"{dup_id!r} absent from the read endpoint", seen="present")
        if not per_item:
            expect(not target.exists(items.id_of(other)),
                   f"the batch was rejected but another of its items was applied ({what})",
                   expected="nothing applied", seen=f"{items.id_of(other)!r} present")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-08", clause="the summary fields where the envelope's summary mapping puts them (counts, an "
                  "`errors` flag) agree with the items of a mixed batch and of an all-valid batch")
def test_summary_fields_agree(target, items, envelope):
    """CORE-08 MUST: where the response carries summary fields (counts, an `errors` flag), they agree with the items."""
    mixed = mixed_batch(items, 3, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    doc = response_json(resp)
    summary = envelope.summary(doc)
    where = "where the envelope's summary mapping puts them"
    if not summary:
        pytest.skip("the response carries no summary fields where the profile's envelope.summary (default: "
                    "/summary/total, /summary/succeeded, /summary/failed) says; undeclared names are not guessed")
    # Compared with the answer itself where its per-item entries are complete (one readable outcome per
    # item): a count that agrees with the entries returned is right, whatever PART finds about those
    # entries. Where entries are missing, extra or unreadable (CORE-02/03 judge that), with the items sent.
    counted = _counted(envelope, doc, mixed.items)
    if counted is None:
        results_note = "the items sent (the answer's entries are incomplete or unreadable)"
        ok, failed = len(mixed.valid_ids), len(mixed.invalid)
    else:
        ok, failed, results_note = counted
    actual = {"total": len(mixed.items), "succeeded": ok, "failed": failed, "errors_flag": failed > 0}
    wrong = {k: v for k, v in summary.items() if k in actual and v != actual[k]}
    expect(not wrong, f"summary fields ({where}) disagree with {results_note} (a mixed batch)",
           expected={k: actual[k] for k in wrong}, seen=wrong)
    # An all-valid batch too: a flag or a count stuck at one value agrees with a mixed batch only.
    valid = items.valid(2)
    resp = setup_ok(target.batch(valid, note="an all-valid batch: its summary"), "an all-valid batch")
    summary = envelope.summary(response_json(resp))
    actual = {"total": len(valid), "succeeded": len(valid), "failed": 0, "errors_flag": False}
    wrong = {k: v for k, v in summary.items() if k in actual and v != actual[k]}
    expect(not wrong, f"summary fields ({where}) disagree with the items sent (an all-valid batch)",
           expected={k: actual[k] for k in wrong}, seen=wrong)
    # A failure found only at write time: an item whose id the all-valid batch created, sent again beside a
    # fresh one. Whether it fails (already exists) or is legitimately upserted, the summary must agree with
    # the outcomes the answer gives (a summary counted before the writes calls it a success either way).
    if not items.has_ids:
        return  # items carry no id: nothing can already exist
    again = [items.valid(1)[0], valid[0]]
    resp = target.batch(again, note="CORE-08: an item re-sent after the all-valid batch created it: its summary")
    if not is_2xx(resp):
        observed("the batch re-sending an existing item was not answered 2xx (HTTP-01 judges that): its "
                 "summary was not observed")
        return
    doc = response_json(resp)
    counted = _counted(envelope, doc, again)
    if counted is None:
        observed("the batch re-sending an existing item got incomplete or unreadable entries (CORE-02/03 judge "
                 "that): its summary was not compared")
        return
    ok, failed, results_note = counted
    summary = envelope.summary(doc)
    actual = {"total": len(again), "succeeded": ok, "failed": failed, "errors_flag": failed > 0}
    wrong = {k: v for k, v in summary.items() if k in actual and v != actual[k]}
    expect(not wrong, f"summary fields ({where}) disagree with {results_note} (a batch re-sending an item "
           f"that already exists, {items.id_of(valid[0])!r}: a failure found at write time)",
           expected={k: actual[k] for k in wrong}, seen=wrong)


def _counted(envelope, doc: Any, batch: list[Any]) -> tuple[int, int, str] | None:
    """(succeeded, failed, what was counted) from the answer's entries; None where they are incomplete or
    unreadable (not one readable outcome per item)."""
    results = envelope.results(doc)
    if envelope.failures_only and envelope.raw_results(doc) is not None:
        # Only the failures are listed: every entry is a failure, every other item succeeded.
        return (len(batch) - len(results), len(results),
                f"the {len(results)} failure entries of the answer (the other items succeeded)")
    if len(results) == len(batch) and all(r.ok is not None for r in results):
        return (sum(r.ok is True for r in results), sum(r.ok is False for r in results),
                f"the {len(results)} entries of the answer")
    return None


@pytest.mark.concurrent
@pytest.mark.rule("CORE-09", clause="for position-correlated targets, results have the request's "
                  "length and each position's outcome (and id, where given) "
                  "matches its item")
def test_position_correlated_results_keep_length_and_order(target, items, envelope):
    """CORE-09 MUST: for targets that correlate by position (declared in the profile), results have the request's length and order."""
    if not envelope.by_position:
        pytest.skip("the profile correlates results by id, not by position")
    mixed = mixed_batch(items, 3, 3)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    results = envelope.results(response_json(resp))
    if envelope.failures_only:
        # Only the failures are listed, each naming its item's index: the indexes are the invalid items'.
        indexes = [r.extra.get("index") for r in results]
        want_idx = [k for k, i in enumerate(mixed.ids) if i in mixed.invalid]
        expect(sorted(i for i in indexes if i is not None) == want_idx and None not in indexes,
               "the failure entries do not name the positions of the failed items",
               expected=f"indexes {want_idx} (at {envelope.result_index!r})", seen=indexes)
        observed("failure-only results: the length of a full result list cannot be observed, only the "
                 "indexes the failures name")
        return
    expect(len(results) == len(mixed.items), "results do not have the request's length",
           expected=len(mixed.items), seen=len(results))
    want = [i in mixed.valid_ids for i in mixed.ids]
    got = [r.ok for r in results]
    expect(got == want, "results are not in the request's order (outcome per position differs)",
           expected=["ok" if w else "error" for w in want], seen=[{True: "ok", False: "error"}.get(g, g) for g in got])
    with_ids = [r.id for r in results if r.id is not None]
    if len(with_ids) == len(results):
        expect(with_ids == mixed.ids, "results are not in the request's order", expected=mixed.ids, seen=with_ids)
