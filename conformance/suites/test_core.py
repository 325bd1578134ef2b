"""CORE — envelope and per-item results (always on). SPEC §4."""
from __future__ import annotations

import re
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.checks import (
    InvalidItem, Mixed, is_code, is_2xx, item_with_existing_id, json_of, observed, schema_errors,
    canonical_results, expect, mixed_batch, new_key, outcomes, response_json, setup_failed, setup_ok, short,
)

MACHINE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]*$")


# -- the large batch ------------------------------------------------------------------------------
# Faults that show only in big batches pass every check judged on 5-7 items: a store that writes in
# chunks and answers the item at each chunk edge twice, answers that leave `data` out past some size to
# stay small, chunks run by parallel workers and joined in the order they finish. So CORE-02, 03, 05 and
# 06 also judge one large mixed batch: limits.max_items items (at most LARGE_CAP, a size past every
# common chunk size: 100, 250, 500), or LARGE_UNDECLARED where the profile declares no limit; as many
# as limits.max_bytes holds. It is sent once per run and shared by those checks: the same answer judged
# against four rules, each check carrying the exchange as its evidence and naming its own rule.
LARGE_CAP = 1000
LARGE_UNDECLARED = 300
LARGE_MIN = 8  # the small checks send up to 7 items: a smaller "large" batch would show nothing new
# One item in ten is invalid, at positions 3, 13, 23, ...: the error side is judged on a big answer too,
# and the pattern is not symmetric, so a reversed list of position-correlated results cannot line up.
LARGE_INVALID_EVERY, LARGE_INVALID_AT = 10, 3


@dataclass
class _Large:
    """The large batch of one run, its answer, and what its checks say they did not observe."""

    mixed: Mixed | None = None
    resp: Any = None
    what: str = ""
    notes: list[str] = field(default_factory=list)
    exchanges: list[Any] = field(default_factory=list)
    skip: str | None = None
    error: Exception | None = None
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


# Per run (the RunContext every worker session of a run shares): concurrent checks run in several
# pytest sessions at once, so a session-scoped fixture would send the batch once per session. Keyed by
# the context's id with a weak reference, so a later run whose context reuses the id gets its own.
_LARGE: dict[int, tuple[Any, _Large]] = {}
_LARGE_LOCK = threading.Lock()


def _large_entry(run_context) -> _Large:
    with _LARGE_LOCK:
        for k in [k for k, (ref, _) in _LARGE.items() if ref() is None]:
            del _LARGE[k]
        got = _LARGE.get(id(run_context))
        if got is None or got[0]() is not run_context:
            got = (weakref.ref(run_context), _Large())
            _LARGE[id(run_context)] = got
        return got[1]


def large_batch(run_context, target, items, envelope, profile) -> _Large:
    """The run's large mixed batch and its answer: sent by the first check that asks (its time is that
    check's), waited for by the others, whose evidence gets the same exchanges. A SKIP or an error of
    the sending is every asking check's."""
    entry = _large_entry(run_context)
    with entry.lock:
        if not entry.done:
            start = len(target.evidence)
            try:
                _send_large(entry, target, items, envelope, profile)
            except pytest.skip.Exception as exc:
                entry.skip = str(exc.msg)
            except Exception as exc:  # noqa: BLE001 - kept, then raised in every check that asks (an ERROR)
                entry.error = exc
            entry.exchanges = list(target.evidence[start:])
            entry.done = True
        else:
            target.evidence.extend(entry.exchanges)
    for note in entry.notes:
        observed(note)
    if entry.skip is not None:
        pytest.skip(entry.skip)
    if entry.error is not None:
        raise entry.error
    return entry


def _send_large(entry: _Large, target, items, envelope, profile) -> None:
    limit = profile.get("limits.max_items")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        n, basis = min(limit, LARGE_CAP), f"limits.max_items = {limit}"
        if n < limit:
            entry.notes.append(f"limits.max_items is {limit}: the large batch held {n} items, not the limit")
    else:
        n, basis = LARGE_UNDECLARED, "a few hundred, as the profile declares no limits.max_items"
        entry.notes.append(f"the profile declares no limits.max_items: the large batch held {n} items, not a "
                           "declared maximum")
    if n < LARGE_MIN:
        pytest.skip(f"limits.max_items is {n}: no batch larger than the small checks' ({LARGE_MIN - 1} items) can be "
                    "sent")
    if not profile.get("items.invalid"):
        # The large batch is a mixed batch, like the small ones; the same words, so a rule whose checks
        # all skip for it gives one reason (reports compare SKIP reasons).
        pytest.skip("profile declares no items.invalid examples")
    at = [k for k in range(n) if k % LARGE_INVALID_EVERY == LARGE_INVALID_AT]
    bad, good = iter(items.invalid(len(at))), iter(items.valid(n - len(at)))
    invalid_at = set(at)
    batch: list[Any] = []
    invalid: dict[Any, InvalidItem] = {}
    for k in range(n):
        if k in invalid_at:
            inv = next(bad)
            invalid[items.id_of(inv.item)] = inv
            batch.append(inv.item)
        else:
            batch.append(next(good))
    max_bytes = profile.get("limits.max_bytes")
    size = len(target.batch_body(batch))
    if isinstance(max_bytes, int) and size > max_bytes:
        keep = max(LARGE_MIN, int(n * max_bytes * 0.9 / size))
        entry.notes.append(f"{n} items do not fit in limits.max_bytes ({max_bytes} bytes): the large batch held {keep}")
        batch = batch[:keep]
    resp = target.batch(batch, note=f"CORE: a large mixed batch of {len(batch)} items ({basis})")
    if _refused_as_too_large(envelope, resp) and len(batch) // 2 >= LARGE_MIN:
        # Refused for its size (SIZE-02 judges a declared limit refused): half as many still judge the rest.
        entry.notes.append(f"the target refused {len(batch)} items as too large ({resp.status_code}): the large "
                           f"batch held {len(batch) // 2}")
        batch = batch[: len(batch) // 2]
        resp = target.batch(batch, note=f"CORE: a large mixed batch of {len(batch)} items (half the refused one)")
    if _refused_as_too_large(envelope, resp):
        pytest.skip(f"the target refused a batch of {len(batch)} items as too large ({resp.status_code}): no "
                    "large batch could be judged (SIZE-02 judges a declared limit)")
    ids = [items.id_of(it) for it in batch]
    entry.mixed = Mixed(batch, [i for i in ids if i not in invalid], {i: invalid[i] for i in ids if i in invalid}, ids)
    entry.resp = resp
    entry.what = f"a large mixed batch of {len(batch)} items: {basis}"


def _refused_as_too_large(envelope, resp) -> bool:
    return resp.status_code == 413 or (400 <= resp.status_code < 500
                                       and envelope.has_error_code(resp, "batch_too_large"))


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
    _judge_one_result_per_item(envelope, mixed, target.batch(mixed.items), "a batch with invalid items")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-02", clause="a large mixed batch (limits.max_items items, at most 1,000; 300 where no limit "
                  "is declared) gets exactly one result per item: as many results as items, no id repeated, none "
                  "missing or invented")
def test_large_batch_one_result_per_item(run_context, target, items, envelope, profile):
    """CORE-02 MUST: exactly one result per item, each echoing its item's `id`; none missing, duplicated, invented."""
    # A store that writes a big batch in chunks can answer an item twice (an inclusive slice end repeats
    # the item at each chunk edge) or not at all (an exclusive one drops it): only a batch larger than a
    # chunk shows it, and a count of results equal to the count of items is the first thing it breaks.
    large = large_batch(run_context, target, items, envelope, profile)
    _judge_one_result_per_item(envelope, large.mixed, large.resp, large.what)


def _judge_one_result_per_item(envelope, mixed: Mixed, resp, what: str) -> None:
    """CORE-02 on the answer `resp` to the mixed batch `mixed` (`what` names the batch in messages)."""
    # A batch refused as a whole for one bad item has no result per item: that is this rule's FAIL.
    expect(is_2xx(resp), f"{what} was refused as a whole: no result per item",
           expected="2xx with one result per item", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    doc = response_json(resp)
    results = envelope.results(resp)
    if envelope.failures_only:
        _one_failure_per_failed_item(envelope, mixed, doc, results, what)
        return
    n = len(mixed.items)
    if envelope.by_position:
        # results carry no id; CORE-09 checks the order (the count is all that says one result per item)
        expect(len(results) == n, f"the number of results differs from the number of items ({what})",
               expected=f"{n} results", seen=f"{len(results)} results")
        return
    ids = [r.id for r in results]
    sent, got = set(mixed.ids), set(ids)
    dup = [i for i, k in Counter(ids).items() if k > 1]
    missing = [i for i in mixed.ids if i not in got]
    invented = [i for i in ids if i not in sent]
    # The count first: it is what a client that pairs results with items by counting trusts. Its evidence
    # names what makes the difference (a repeated id, a missing one), since a list of 1,000 ids shows nothing.
    expect(len(results) == n, f"the number of results differs from the number of items ({what})",
           expected=f"{n} results, one per item",
           seen="; ".join([f"{len(results)} results"] + [f"{k}: {_few(v)}" for k, v in
                          (("duplicated", dup), ("missing", missing), ("invented", invented)) if v]))
    expect(not dup, f"an item has more than one result ({what})", expected="one result per id",
           seen=f"duplicated: {_few(dup)}")
    expect(not missing, f"an item has no result echoing its id ({what})",
           expected=mixed.ids if n <= 10 else f"a result for each of the {n} ids sent",
           seen=f"missing: {_few(missing)}")
    expect(not invented, f"a result carries an id that no item had ({what})",
           expected=mixed.ids if n <= 10 else f"only the {n} ids sent", seen=f"invented: {_few(invented)}")


def _few(values: list[Any], k: int = 10) -> str:
    """The first `k` values, and how many more (a big batch's evidence stays readable)."""
    return repr(values[:k]) + (f" and {len(values) - k} more" if len(values) > k else "")


def _one_failure_per_failed_item(envelope, mixed, doc, results, what: str = "a mixed batch") -> None:
    """CORE-02 where the answer lists only the failures (results_mode: failures_only): an item absent
    from the list succeeded, so a missing ok result cannot be seen; what can be seen is judged: each
    failure entry answers one item sent (none invented), no item has two, and every item the profile
    says is invalid has one (its absence would claim it succeeded)."""
    expect(envelope.raw_results(doc) is not None,
           f"the failures are not where, or in the form, the profile says ({what})",
           expected=envelope.results_location, seen=short(doc, 300))
    ids = [envelope.entry_id(r, mixed.items) for r in results]
    sent = set(mixed.ids)
    invented = [r.extra.get("index") if envelope.by_position else r.id for r, i in zip(results, ids)
                if i is None or i not in sent]
    expect(not invented, f"a failure entry answers no item of the batch (an invented result; {what})",
           expected=f"entries for items of {mixed.ids}" if len(mixed.ids) <= 10 else
           f"entries for the {len(mixed.ids)} items sent", seen=f"invented: {_few(invented)}")
    dup = [i for i, n in Counter(ids).items() if n > 1]
    expect(not dup, f"an item has more than one failure entry ({what})", expected="one entry per failed item",
           seen=f"duplicated: {_few(dup)}")
    listed = set(ids)
    missing = [i for i in mixed.invalid if i not in listed]
    expect(not missing, f"an invalid item has no failure entry (its absence claims it succeeded; {what})",
           expected=f"a failure entry for each of the {len(mixed.invalid)} invalid items "
           f"({envelope.results_location})", seen=f"missing: {_few(missing)}")
    observed("failure-only results: a valid item's result is the absence of an entry, so only the failures "
             "(none missing, duplicated or invented) were observed, not a result per valid item")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-03", clause="each result is ok with data (valid items) or error with an "
                  "error object (invalid items)")
def test_result_status_and_payload(target, items, envelope):
    """CORE-03 MUST: each result has `status` ok or error; ok carries `data`, error carries `error`."""
    mixed = mixed_batch(items, 3, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    _judge_status_and_payload(envelope, mixed, resp, "a mixed batch")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-03", clause="each result of a large mixed batch (limits.max_items items, at most 1,000; 300 "
                  "where no limit is declared) is ok with data (valid items) or error with an error object "
                  "(invalid items)")
def test_large_batch_result_status_and_payload(run_context, target, items, envelope, profile):
    """CORE-03 MUST: each result has `status` ok or error; ok carries `data`, error carries `error`."""
    # A target may trim big answers (no `data` past some size, to keep them small): the clause holds for
    # every batch, so it is judged on the large one too.
    large = large_batch(run_context, target, items, envelope, profile)
    _judge_status_and_payload(envelope, large.mixed, setup_ok(large.resp, large.what), large.what)


def _judge_status_and_payload(envelope, mixed: Mixed, resp, what: str) -> None:
    """CORE-03 on the 2xx answer `resp` to the mixed batch `mixed`."""
    results = envelope.results(response_json(resp))
    if envelope.failures_only:
        observed("failure-only results: an ok item has no entry, so no ok result's data was observed")
    else:
        expect(results, f"the response holds no results ({what})", expected="one result per item",
               seen=short(resp.text))
    for r in results:
        expect(r.ok is not None, f"result {r.id!r} has a status that is neither ok nor error ({what})",
               expected=f"one of {envelope.status_values}", seen=r.status)
        if r.ok:
            expect(r.data is not None, f"ok result {r.id!r} carries no data ({what})", expected="data",
                   seen=short(r.raw))
        else:
            expect(r.error is not None or r.error_code is not None,
                   f"error result {r.id!r} carries no error ({what})", expected="error", seen=short(r.raw))
    by_id = envelope.result_map(resp, mixed.items)
    wrong = [i for i in mixed.valid_ids if i in by_id and by_id[i].ok is not True]
    wrong += [i for i in mixed.invalid if i in by_id and by_id[i].ok is not False]
    expect(not wrong, f"a result's status contradicts the item (valid item not ok, or invalid item not error; {what})",
           expected="valid items ok, invalid items error",
           seen=f"{len(wrong)} results, e.g. " + short({i: by_id[i].status for i in wrong[:10]}))


@pytest.mark.concurrent
@pytest.mark.rule("CORE-04", clause="each error result carries a machine-readable code and a "
                  "message")
def test_error_is_object_with_code_and_message(target, items, envelope, profile):
    """CORE-04 SHOULD: an error result's `error` is an object with a machine-readable `code` and a `message`."""
    # Every items.invalid example, not the first two: a target's errors may be built in several places
    # (a framework's request-schema layer for a missing member, hand-written checks for the rest), and
    # the code can be missing from one kind only.
    mixed = mixed_batch(items, 1, max(2, len(profile.get("items.invalid") or [])))
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
    # A failure found only at write time (an id that already exists) too: it is often answered by another
    # layer (the database's exception handler) than the validation errors, with the driver's text alone.
    if not items.has_ids:
        observed("items carry no id (items.id_field: null): no write-time failure (an existing id) was provoked")
        return
    clash = item_with_existing_id(target, items, what="CORE-04 setup: create the item a later batch re-uses")
    batch = [items.one(), clash]
    resp = target.batch(batch, note="CORE-04: an item whose id already exists (a failure found at write time)")
    if not is_2xx(resp) or json_of(resp) is None:
        observed(f"the batch re-using an existing id was answered {resp.status_code} (HTTP-01 judges that): no "
                 "write-time error result was judged")
        return
    r = envelope.result_map(resp, batch).get(items.id_of(clash))
    if r is None or r.ok is not False:
        observed("the item re-using an existing id got no error result (an upsert, or CORE-02/03 report it): no "
                 "write-time error result was judged")
        return
    what = f"the write-time error of {items.id_of(clash)!r} (its id already exists)"
    expect(is_code(r.error_code) and (not isinstance(r.error_code, str) or MACHINE_CODE.match(r.error_code)),
           f"{what} has no machine-readable code", expected="error.code like 'already_exists'",
           seen=short(r.error if r.error is not None else r.raw))
    expect(isinstance(r.error_message, str) and r.error_message.strip(), f"{what} has no message",
           expected="error.message", seen=short(r.error))


@pytest.mark.concurrent
@pytest.mark.rule("CORE-05", clause="results come in request order (split ok/error lists: each in "
                  "request order)")
def test_results_in_request_order(target, items, envelope):
    """CORE-05 SHOULD: results come in request order."""
    if envelope.by_position:
        pytest.skip("position-correlated target: CORE-09 checks the order")
    mixed = mixed_batch(items, 4, 3)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    _judge_order(envelope, mixed, resp, "a mixed batch")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-05", clause="the results of a large mixed batch (limits.max_items items, at most 1,000; 300 "
                  "where no limit is declared) come in request order (split ok/error lists: each in request order)")
def test_large_batch_results_in_request_order(run_context, target, items, envelope, profile):
    """CORE-05 SHOULD: results come in request order."""
    # A target that runs a big batch in chunks on parallel workers and joins their results as they
    # finish keeps a small batch (one chunk) in order: only a batch of several chunks shows it.
    if envelope.by_position:
        pytest.skip("position-correlated target: CORE-09 checks the order")
    large = large_batch(run_context, target, items, envelope, profile)
    _judge_order(envelope, large.mixed, setup_ok(large.resp, large.what), large.what)


def _judge_order(envelope, mixed: Mixed, resp, what: str) -> None:
    """CORE-05 on the 2xx answer `resp` to the mixed batch `mixed`. Only the order is judged: each item's
    first result among those answering items sent, against the order of those items (a result missing,
    repeated or invented is CORE-02's to report, and would otherwise WARN here too)."""
    results = envelope.results(response_json(resp))
    sent = set(mixed.ids)
    if envelope.failures_only:
        # Only the failures are listed: each list (each member of a map) keeps the request order of its items.
        lists: dict[Any, list[Any]] = {}
        for r in results:
            item_id = envelope.entry_id(r, mixed.items)
            if item_id in sent:
                lists.setdefault(None if envelope.failures_by_id else r.extra.get("map_key"), []).append(item_id)
        # each list against the request order of the items it answers (an item listed twice: its first entry)
        got = {k: list(dict.fromkeys(v)) for k, v in lists.items()}
        want = {k: [i for i in mixed.ids if i in set(v)] for k, v in got.items()}
        wrong = {k: v for k, v in got.items() if v != want[k]}
        expect(not wrong, f"failure entries are not in request order ({what})",
               expected=mixed.ids if len(mixed.ids) <= 10 else "the request order of the items sent",
               seen=wrong if len(mixed.ids) <= 10 else {k: _out_of_order(want[k], v) for k, v in wrong.items()})
        if not results:
            observed("the failure list was empty: no order to observe")
        return
    ids = list(dict.fromkeys(r.id for r in results if r.id in sent))
    answered = set(ids)
    if envelope.split_results:
        # Separate success and failure lists: each list keeps the request order of its items.
        valid = set(mixed.valid_ids)
        ids = [i for i in ids if i in valid] + [i for i in ids if i not in valid]
        want = ([i for i in mixed.valid_ids if i in answered]
                + [i for i in mixed.ids if i not in valid and i in answered])
        expect(ids == want, f"results in the success and failure lists are not in request order ({what})",
               expected=want if len(want) <= 10 else "the request order of the items sent",
               seen=ids if len(want) <= 10 else _out_of_order(want, ids))
        return
    want = [i for i in mixed.ids if i in answered]
    expect(ids == want, f"results are not in request order ({what})",
           expected=want if len(want) <= 10 else "the request order of the items sent",
           seen=ids if len(want) <= 10 else _out_of_order(want, ids))


def _out_of_order(want: list[Any], got: list[Any]) -> str:
    """Where a long result list first leaves the request order (a list of 1,000 ids shows nothing)."""
    k = next((k for k, (w, g) in enumerate(zip(want, got)) if w != g), min(len(want), len(got)))
    if k >= min(len(want), len(got)):
        return f"{len(got)} results in request order for {len(want)} items"
    return (f"result {k + 1} of {len(got)} is the first out of request order: it answers {got[k]!r}, where the "
            f"request has {want[k]!r}")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-06", clause="the batch response is labelled JSON, has its result list where "
                  "the profile says, and validates against the batch-response "
                  "schema (in canonical form)")
def test_response_validates_and_is_json(target, items, envelope):
    """CORE-06 MUST: the response validates against the batch-response schema; Content-Type is JSON."""
    mixed = mixed_batch(items, 2, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    _judge_batch_response(envelope, resp, mixed.items, "a mixed batch")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-06", clause="every kind of batch answer, not a mixed batch's only: the answers to an all-valid "
                  "batch, to the large mixed batch, to a failed atomic batch (where endpoints.atomic is declared) and "
                  "to a keyed batch sent again (where idempotency.header is declared) are each labelled JSON, have "
                  "their result list where the profile says and validate against the batch-response schema")
def test_every_kind_of_batch_answer_validates_and_is_json(run_context, target, items, envelope, profile):
    """CORE-06 MUST: the response validates against the batch-response schema; Content-Type is JSON."""
    # A server renders its answers on several paths: a fast path for all-ok batches, the rollback
    # handler of a failed atomic batch, the replay of a stored response (often its bytes alone, without
    # the headers they were first sent with). Each path can lose the JSON label or the shape on its own.
    judged: list[str] = []
    valid = items.valid(3)
    header = profile.get("idempotency.header")
    headers = {str(header): new_key(items)} if header else None
    body = target.batch_body(valid)  # the same bytes twice: a replay, never a different body
    first = target.batch(valid, headers=headers, body=body,
                         note="CORE-06: an all-valid batch" + (" with a batch key" if header else ""))
    if is_2xx(first):
        _judge_batch_response(envelope, first, valid, "an all-valid batch")
        judged.append("an all-valid batch")
    else:
        observed(f"the all-valid batch was answered {first.status_code} (CORE-01 judges that): its answer was "
                 "not judged, nor a replay of it")
    if not header:
        observed("the profile declares no idempotency.header: no replayed answer was judged")
    elif is_2xx(first):
        again = target.batch(valid, headers=headers, body=body, note="CORE-06: the same keyed batch again (a replay)")
        if not is_2xx(again):
            observed(f"the keyed batch sent again was answered {again.status_code} (IDEM-01 judges that): no "
                     "replayed answer was judged")
        else:
            if (again.status_code != first.status_code
                    or outcomes(envelope, again, valid) != outcomes(envelope, first, valid)):
                observed("the keyed batch sent again was not answered with a replay of the first answer (IDEM-01 "
                         "judges that): it was judged as the batch answer it is")
            _judge_batch_response(envelope, again, valid, "the same keyed batch sent again (a replay)")
            judged.append("a replay")
    _judge_atomic_failure(target, items, envelope, profile, judged)
    try:
        large = large_batch(run_context, target, items, envelope, profile)
    except pytest.skip.Exception as exc:
        observed(f"no large batch was judged: {exc.msg}")
    else:
        if is_2xx(large.resp):
            _judge_batch_response(envelope, large.resp, large.mixed.items, large.what)
            judged.append("the large batch")
        else:
            observed(f"{large.what} was answered {large.resp.status_code} (CORE-02 judges that): its answer was not "
                     "judged")
    if not judged:
        setup_failed("no batch answer this check sends was a 2xx or an atomic failure: nothing to judge")


def _judge_atomic_failure(target, items, envelope, profile, judged: list[str]) -> None:
    """CORE-06 on the answer to an atomic batch with a failing item (where the profile declares the mode)."""
    if not profile.has("endpoints.atomic"):
        observed("the profile declares no endpoints.atomic: no failed atomic batch's answer was judged")
        return
    if not profile.get("items.invalid"):
        observed("the profile declares no items.invalid examples: no atomic batch was made to fail")
        return
    limit = profile.get("limits.atomic_max_items")
    n_valid = 2 if not isinstance(limit, int) or limit >= 3 else max(0, limit - 1)
    mixed = mixed_batch(items, n_valid, 1)
    resp = target.atomic(mixed.items, note="CORE-06: an atomic batch with a failing item")
    if is_2xx(resp):
        # Not failed as a whole (ATOM-01/03 judge that): still a batch answer, judged as one.
        _judge_batch_response(envelope, resp, mixed.items, "an atomic batch with a failing item (answered 2xx)")
    elif 400 <= resp.status_code < 500:
        # The failure of an atomic batch is a batch answer too: `{"status": "failed", "error", "results"}`
        # in the schema, one result per item saying why (ATOM-02), labelled JSON like every other.
        _judge_batch_response(envelope, resp, mixed.items, "a failed atomic batch")
    else:
        observed(f"the atomic batch with a failing item was answered {resp.status_code} (ATOM-03 judges that): "
                 "no atomic failure's answer was judged")
        return
    judged.append("a failed atomic batch")


def _judge_batch_response(envelope, resp, batch: list[Any], what: str) -> None:
    """CORE-06 on the answer `resp` to `batch`: labelled JSON (or the profile's declared media type), the
    result list where the profile says, valid against the batch-response schema in canonical form."""
    expect(envelope.is_json(resp), f"the answer to {what} is not labelled JSON (Content-Type)",
           expected=f"application/json (or +json, or {envelope.content_type})",
           seen=resp.headers.get("content-type", "no Content-Type"))
    doc = response_json(resp, f"the answer to {what}")
    expect(envelope.raw_results(doc) is not None, f"the answer to {what} has no result list where the profile says",
           expected=envelope.results_location, seen=short(doc))
    # Failure-only answers: the failure entries, re-expressed, must validate (an ok item has no entry).
    if envelope.failures_only and not envelope.raw_results(doc):
        observed(f"failure-only results: the answer to {what} lists no failure, so its label and its failure member "
                 "were judged, not a result's shape")
    ids = [envelope.item_id(it) for it in batch]
    errs = schema_errors("batch-response.schema.json", doc if envelope.canonical else
                           canonical_results([r for r in envelope.result_map(doc, batch).values() if not r.implied]
                                             if envelope.failures_only else envelope.results(doc), ids))
    expect(not errs, f"the answer to {what} does not validate against the batch-response schema",
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
    _judge_position_order(envelope, mixed, resp, "a mixed batch")


@pytest.mark.concurrent
@pytest.mark.rule("CORE-09", clause="for position-correlated targets, the results of a large mixed batch "
                  "(limits.max_items items, at most 1,000; 300 where no limit is declared) have the request's "
                  "length and each position's outcome (and id, where given) matches its item")
def test_large_batch_position_correlated_results_keep_length_and_order(run_context, target, items, envelope,
                                                                       profile):
    """CORE-09 MUST: for targets that correlate by position (declared in the profile), results have the request's length and order."""
    # A target that runs a big batch in chunks on parallel workers and joins their results in the order
    # the chunks finish keeps a small batch (one chunk) in order: for a client that pairs results with
    # items by position, every result past the first chunk then answers another item. Only a batch of
    # several chunks shows it (CORE-05's large check skips position-correlated targets for this one).
    if not envelope.by_position:
        pytest.skip("the profile correlates results by id, not by position")
    large = large_batch(run_context, target, items, envelope, profile)
    _judge_position_order(envelope, large.mixed, setup_ok(large.resp, large.what), large.what)


def _judge_position_order(envelope, mixed: Mixed, resp, what: str) -> None:
    """CORE-09 on the 2xx answer `resp` to the mixed batch `mixed` of a position-correlated target."""
    results = envelope.results(response_json(resp))
    n = len(mixed.items)
    if envelope.failures_only:
        # Only the failures are listed, each naming its item's index: the indexes are the invalid items'.
        indexes = [r.extra.get("index") for r in results]
        want_idx = [k for k, i in enumerate(mixed.ids) if i in mixed.invalid]
        got_idx = sorted(i for i in indexes if i is not None)
        expect(got_idx == want_idx and None not in indexes,
               f"the failure entries do not name the positions of the failed items ({what})",
               expected=f"indexes {want_idx if n <= 10 else _few(want_idx)} (at {envelope.result_index!r})",
               seen=indexes if n <= 10 else _few(indexes))
        observed(f"failure-only results: the length of a full result list cannot be observed, only the "
                 f"indexes the failures name ({what})")
        return
    expect(len(results) == n, f"results do not have the request's length ({what})", expected=n, seen=len(results))
    want = [i in mixed.valid_ids for i in mixed.ids]
    got = [r.ok for r in results]
    word = {True: "ok", False: "error"}
    if n <= 10:
        expect(got == want, f"results are not in the request's order (outcome per position differs; {what})",
               expected=[word[w] for w in want], seen=[word.get(g, g) for g in got])
    else:
        off = [k for k, (w, g) in enumerate(zip(want, got)) if w != g]
        expect(not off, f"results are not in the request's order (outcome per position differs; {what})",
               expected="each position's outcome that of the item sent there",
               seen=f"{len(off)} positions whose outcome is not their item's: {_few(off)}")
    with_ids = [r.id for r in results if r.id is not None]
    if len(with_ids) == len(results):
        expect(with_ids == mixed.ids, f"results are not in the request's order ({what})",
               expected=mixed.ids if n <= 10 else "the request order of the items sent",
               seen=with_ids if n <= 10 else _out_of_order(mixed.ids, with_ids))
    elif n > 10:
        observed(f"the results carry no ids: the order of {what} was judged by each position's outcome only")
