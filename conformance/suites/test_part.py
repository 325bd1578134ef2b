"""PART — partial failure (non-atomic endpoints). SPEC §4.

Every effect is judged through the read endpoint; what a response claims is only used to find
which items the target says failed.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from conformance.checks import (expect, item_with_existing_id, json_of, mixed_batch, observed, pointer_get,
                                 response_json, setup_failed, setup_ok, short)


def _need_read(profile) -> None:
    profile.require("endpoints.read")


# 4xx answers that say nothing about the items sent: lapsed credentials (the preflight passed with
# the same ones), a request not read in time, a rate limit. Like a 5xx they leave the rule
# unevaluated (SPEC §5: ERROR), never judged.
_NOT_ABOUT_THE_ITEMS = {401, 407, 408, 429}


def _refused(resp, what: str) -> bool:
    """Whether the batch a rule is about was refused whole with a 4xx (True) or answered 2xx (False).

    A refusal is the target's answer about those very items (a whole-batch 409 for an id that
    exists, a 422 for a lone invalid item), so the check judges it against its rule instead of
    calling it a setup failure; only setup steps (creating a prerequisite item) go through
    `setup_ok`. Anything else (5xx, the statuses above, 1xx/3xx) is an ERROR: the kit could not
    evaluate the rule."""
    code = resp.status_code
    if 200 <= code < 300:
        return False
    if 400 <= code < 500 and code not in _NOT_ABOUT_THE_ITEMS:
        return True
    setup_failed(f"{what}: the target answered {code}, which says nothing about the items, so the check "
                 "could not be evaluated")


@dataclasses.dataclass(frozen=True)
class _Refusal:
    """A whole-batch refusal, as an item's outcome: its status and batch-level error code (the
    message may name the batch's own ids, so it is not compared; the exchange is in the evidence)."""
    status: int
    code: Any

    def __str__(self) -> str:
        code = f" {self.code!r}" if self.code is not None else ""
        return f"the whole batch answered {self.status}{code} (a refusal: no per-item result read)"


def _refusal(envelope, resp) -> _Refusal:
    return _Refusal(resp.status_code, envelope.error_code(resp) if json_of(resp) is not None else None)


@pytest.mark.concurrent
@pytest.mark.rule("PART-01", clause="every valid item of a mixed batch is applied (read endpoint)")
def test_valid_items_of_mixed_batch_are_applied(target, items, profile):
    """PART-01 MUST: in a mixed batch every valid item is applied (visible through the read endpoint)."""
    _need_read(profile)
    mixed = mixed_batch(items, 3, 3)
    setup_ok(target.batch(mixed.items), "a mixed batch")
    missing = [i for i in mixed.valid_ids if not target.exists(i)]
    expect(not missing, "a valid item of a mixed batch was not applied", expected=f"{mixed.valid_ids} readable",
           seen=f"not readable: {missing}")


@pytest.mark.concurrent
@pytest.mark.rule("PART-01", clause="the valid item of a batch in which most items fail (1 valid, 4 "
                  "invalid) is applied (read endpoint)")
def test_valid_item_of_mostly_failing_batch_is_applied(target, items, envelope, profile):
    """PART-01 MUST: in a mixed batch every valid item is applied (visible through the read endpoint)."""
    _need_read(profile)
    # An error-rate breaker ("more than half failed: abandon the batch") is not triggered by a batch
    # that fails half-way: here four items of five fail, and the valid one must still be applied.
    mixed = mixed_batch(items, 1, 4)
    valid_id = mixed.valid_ids[0]
    resp = target.batch(mixed.items, note="a batch in which most items fail")
    # Applied is judged through the read endpoint, as the rule says; whether its result is correlated
    # and ok is CORE-02's and CORE-03's to judge.
    expect(target.exists(valid_id), "the valid item of a batch in which most items fail was not applied",
           expected=f"{valid_id!r} readable", seen=f"answered {resp.status_code}; not readable")


@pytest.mark.concurrent
@pytest.mark.rule("PART-02", clause="no invalid item (fresh id) of a mixed batch is readable "
                  "afterwards")
def test_failed_items_are_not_readable(target, items, profile):
    """PART-02 MUST: every failed item has no effect (not readable, nothing half-written)."""
    _need_read(profile)
    mixed = mixed_batch(items, 3, 3)
    resp = target.batch(mixed.items, note="a mixed batch")
    if _refused(resp, "a mixed batch"):
        # Refused whole, the invalid items failed all the same, and must have left nothing behind (a
        # 4xx is HTTP-01's to judge, not this rule's).
        observed(f"the mixed batch was refused whole ({resp.status_code}): its invalid items were judged in a "
                 "refused batch, not beside applied items")
    present = [i for i in mixed.invalid if target.exists(i)]
    expect(not present, "an invalid item (fresh id) is readable after the batch",
           expected="no invalid item readable", seen=f"answered {resp.status_code}; readable: {present}")


@pytest.mark.concurrent
@pytest.mark.rule("PART-02", clause="an item failing because its id exists leaves the stored "
                  "resource unchanged (whole read document)")
def test_failed_item_leaves_existing_resource_untouched(target, items, envelope, profile):
    """PART-02 MUST: every failed item has no effect (not readable, nothing half-written)."""
    _need_read(profile)
    first = items.one()
    item_id = items.id_of(first)
    setup_ok(target.batch([first]), "creating an item")
    before = target.read_json(item_id)
    if before is None:
        setup_failed(f"the item {item_id!r} just created is not readable")
    # The same id again with another payload, next to an invalid item: an error here must change nothing.
    tpls = items.templates()
    again = items.with_id(tpls[1 % len(tpls)], item_id)
    bad = items.invalid(1)[0].item
    resp = target.batch([again, bad, items.one()], note="a batch re-using an existing id")
    if _refused(resp, "a batch re-using an existing id"):
        # A whole-batch refusal (a 409 for the clash, say) is the target's answer to the item under
        # test: it failed, so the stored resource must be as it was. The status itself is HTTP-01's.
        failed_as = str(_refusal(envelope, resp))
        observed(f"the batch re-using the id was refused whole ({resp.status_code}): the item failed with the "
                 "batch, not with an error result of its own")
    else:
        by_id = envelope.result_map(response_json(resp), [again, bad])
        r = by_id.get(item_id)
        if r is None or r.ok is not False:
            pytest.skip("the target accepts a second write to an existing id (upsert): no failed item to observe")
        failed_as = f"an error result ({short(r.error if r.error is not None else r.raw, 200)})"
    after = target.read_json(item_id)
    expect(after == before, "an item that failed (its id already existed) changed the stored resource",
           expected=short(before), seen=f"{short(after)}, after {failed_as}")


def _names_field(message: str | None, field: str) -> bool:
    if not message:
        return False
    low = message.lower()
    return field.lower() in low or field.lower().replace("_", " ") in low


@pytest.mark.concurrent
@pytest.mark.rule("PART-03", clause="each invalid example gets its declared error code and a "
                  "message naming its field")
def test_item_error_names_code_and_field(target, items, envelope):
    """PART-03 MUST: a failed item's error says what is wrong with that item (code, and a message naming the field)."""
    n = len(items.profile.get("items.invalid") or [])
    mixed = mixed_batch(items, 2, max(n, 1))
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    by_id = envelope.result_map(response_json(resp), mixed.items)
    wrong: dict[str, Any] = {}
    for item_id, inv in mixed.invalid.items():
        r = by_id.get(item_id)
        if r is None or r.ok is not False:
            wrong[item_id] = f"no error result ({short(r.raw) if r else 'missing'})"
            continue
        if r.error_code != inv.code:
            wrong[item_id] = f"code {r.error_code!r}, expected {inv.code!r}"
        elif inv.field and not _names_field(r.error_message, inv.field):
            wrong[item_id] = f"message {r.error_message!r} does not name the field {inv.field!r}"
    expect(not wrong, "an item error does not say what is wrong with the item",
           expected="the profile's code and a message naming the field", seen=wrong)


def _applied_marker(profile, resource: Any) -> Any:
    """What shows an item was applied again: the effect counter where declared, else the whole resource."""
    pointer = profile.get("items.effect_counter")
    if pointer:
        return pointer_get(resource, pointer, None)
    return resource


def _answered_mixed_batch(target, items, envelope) -> tuple[Any, dict[Any, Any]]:
    """PART-04's first step: a mixed batch (3 valid, 2 invalid) sent, and its results by item id."""
    mixed = mixed_batch(items, 3, 2)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    return mixed, envelope.result_map(response_json(resp), mixed.items)


def _applied_again(profile, before: dict[Any, Any], after: dict[Any, Any]) -> dict[Any, Any]:
    """The items of `before` (id -> resource read) whose applied marker differs in `after`."""
    return {i: {"before": short(_applied_marker(profile, before[i]), 200),
                "after": short(_applied_marker(profile, after[i]), 200)}
            for i in before if _applied_marker(profile, before[i]) != _applied_marker(profile, after[i])}


def _expect_corrected_applied(target, envelope, resp, sent: list[dict[str, Any]], corrected_ids: list[Any],
                              message: str) -> None:
    """Every corrected item got an ok result in `resp` (the answer to `sent`) and reads back."""
    results = envelope.result_map(response_json(resp), sent)
    not_ok = {i: (short(results[i].raw, 200) if i in results else "no result") for i in corrected_ids
              if i not in results or results[i].ok is not True}
    expect(not not_ok, message, expected="ok for every corrected item", seen=not_ok)
    absent = [i for i in corrected_ids if not target.exists(i)]
    expect(not absent, "a corrected item reported ok is not readable", expected="readable", seen=absent)


@pytest.mark.rule("PART-04", clause="resubmitting only the failed items, corrected, succeeds and they read back; the "
                  "earlier successes are unchanged")
def test_resubmitting_corrected_failures(target, items, envelope, profile):
    """PART-04 MUST: resubmitting only the failed items, corrected, succeeds; items that succeeded before are not applied again."""
    _need_read(profile)
    mixed, by_id = _answered_mixed_batch(target, items, envelope)
    failed = [i for i in mixed.invalid if i in by_id and by_id[i].ok is False]
    if not failed:
        pytest.skip("no item of the mixed batch failed (PART-03 reports that)")
    before = {i: target.read_json(i) for i in mixed.valid_ids}
    tpls = items.templates()
    corrected = [items.with_id(tpls[k % len(tpls)], i) for k, i in enumerate(failed)]
    resp2 = target.batch(corrected, note="the failed items, corrected, same ids")
    expect(200 <= resp2.status_code < 300, "resubmitting the corrected failed items was not accepted",
           expected="2xx", seen=f"{resp2.status_code}: {short(resp2.text, 300)}")
    _expect_corrected_applied(target, envelope, resp2, corrected, failed, "a corrected item failed on resubmission")
    after = {i: target.read_json(i) for i in mixed.valid_ids}
    redone = _applied_again(profile, before, after)
    expect(not redone, "an item that had succeeded was applied again by the resubmission",
           expected="unchanged", seen=redone)


@pytest.mark.rule("PART-04", clause="items that succeeded before are not applied again: the whole batch resubmitted "
                  "with its failures corrected applies the corrected items and leaves every earlier success as it "
                  "was (effect counter, else the whole resource, through the read endpoint)")
def test_resubmitting_the_whole_batch_corrected_applies_nothing_twice(target, items, envelope, profile):
    """PART-04 MUST: resubmitting only the failed items, corrected, succeeds; items that succeeded before are not applied again."""
    _need_read(profile)
    mixed, by_id = _answered_mixed_batch(target, items, envelope)
    succeeded = [i for i in mixed.valid_ids if i in by_id and by_id[i].ok is True]
    if not succeeded:
        pytest.skip("no item of the mixed batch succeeded (CORE-03 reports that)")
    before = {i: target.read_json(i) for i in succeeded}
    tpls = items.templates()
    # The client's natural retry: the same batch, the invalid items replaced by corrected ones (same ids).
    whole = [it if items.id_of(it) not in mixed.invalid
             else items.with_id(tpls[k % len(tpls)], items.id_of(it)) for k, it in enumerate(mixed.items)]
    resp2 = target.batch(whole, note="the whole batch again, its failed items corrected, same ids")
    expect(200 <= resp2.status_code < 300, "resubmitting the whole batch with its failures corrected was not accepted",
           expected="2xx (earlier successes may be ok or errors; nothing applied twice)",
           seen=f"{resp2.status_code}: {short(resp2.text, 300)}")
    after = {i: target.read_json(i) for i in succeeded}
    redone = _applied_again(profile, before, after)
    expect(not redone, "an item that had succeeded was applied again when the whole batch was resubmitted",
           expected="unchanged", seen=redone)
    _expect_corrected_applied(target, envelope, resp2, whole, mixed.invalid,
                              "a corrected item failed when the whole batch was resubmitted")


@pytest.mark.concurrent
@pytest.mark.rule("PART-05", clause="each item's outcome and error code is the same alone as in a "
                  "mixed batch")
def test_item_result_independent_of_batch(target, items, envelope):
    """PART-05 SHOULD: an item's result does not depend on the other items in the batch (same result as submitted alone)."""
    # Both batches are the ones the rule is about: a 4xx to either is an outcome to compare (a lone
    # invalid item answered 422 with no per-item result, where in a batch it gets an error result, is
    # the dependence the rule names), not a setup failure.
    mixed = mixed_batch(items, 3, 3)
    resp = target.batch(mixed.items, note="a mixed batch")
    mixed_refused = _refused(resp, "a mixed batch")
    by_id = {} if mixed_refused else envelope.result_map(response_json(resp), mixed.items)
    differ: dict[str, Any] = {}
    for item in mixed.items:
        item_id = items.id_of(item)
        in_batch = _refusal(envelope, resp) if mixed_refused else by_id.get(item_id)
        if in_batch is None:
            continue  # CORE-02 reports a missing result
        alone_item = items.with_id(item)  # same payload, fresh id (the first one may now exist)
        alone_resp = target.batch([alone_item], note="the same payload alone")
        if _refused(alone_resp, "a one-item batch"):
            alone = _refusal(envelope, alone_resp)
        else:
            alone = envelope.result_map(response_json(alone_resp), [alone_item]).get(items.id_of(alone_item))
        if alone is None:
            differ[item_id] = "no result when alone"
        elif _compared(in_batch) != _compared(alone):
            differ[item_id] = {"in the mixed batch": _outcome(in_batch), "alone": _outcome(alone)}
    expect(not differ, "an item's result changes with the other items of the batch",
           expected="the same outcome and error code", seen=differ)


def _compared(r) -> Any:
    """What PART-05 compares: a result's outcome and error code, or a whole-batch refusal (status, code)."""
    return r if isinstance(r, _Refusal) else (r.ok, r.error_code)


def _outcome(r) -> str:
    if isinstance(r, _Refusal):
        return str(r)
    return "ok" if r.ok else f"error {r.error_code!r}" if r.ok is False else f"status {r.status!r}"


def retry_signal(result) -> bool | None:
    """How the kit reads PART-06: the error's retryable flag where the envelope maps it (default
    /error/retryable; or error_sender_fault inverted), else a transient per-item status (429/503,
    result_http_status) with a Retry-After (result_retry_after); None when the result says nothing."""
    if result.retryable is not None:
        return result.retryable
    if result.http_status in (429, 503) and result.retry_after is not None:
        return True
    return None


def _write_time_error(target, items, envelope) -> tuple[Any, Any]:
    """PART-06's write-time error: (id, error result) of a valid item that fails only when written (its
    id already exists: the store's unique key, found after validation passed), or (None, None) with
    a note of what was not observed (no ids to re-use, an upsert, a whole-batch refusal)."""
    if not items.has_ids:
        observed("items carry no id (items.id_field: null): no write-time error (an id already taken) could be "
                 "provoked; only validation errors were judged")
        return None, None
    clash = item_with_existing_id(target, items, what="setup: create the item whose id the next batch re-uses")
    clash_id = items.id_of(clash)
    batch = [items.one(), clash]
    resp = target.batch(batch, note="a batch whose last item's id already exists (fails only when written)")
    if _refused(resp, "a batch re-using an existing id"):
        observed(f"the batch re-using an existing id was refused whole ({resp.status_code}): no error result for "
                 "the item that failed when written; only validation errors were judged")
        return None, None
    r = envelope.result_map(response_json(resp), batch).get(clash_id)
    if r is None:
        observed("no result for the item whose id already exists (CORE-02 reports it); only validation errors "
                 "were judged")
        return None, None
    if r.ok is not False:
        observed("the target accepts a second write to an existing id (upsert): no write-time error to judge; "
                 "only validation errors were judged")
        return None, None
    return clash_id, r


@pytest.mark.concurrent
@pytest.mark.rule("PART-06", clause="every error result says whether a retry can succeed, the error of an "
                  "item that fails only when written (its id already exists) included, and a validation error "
                  "does not say it can")
def test_error_results_say_whether_retry_can_succeed(target, items, envelope):
    """PART-06 SHOULD: an error result says whether retrying the item can succeed (`retryable`, or a transient code such as 429/503 with `Retry-After`), so clients retry only what can succeed."""
    mixed = mixed_batch(items, 1, 3)
    resp = setup_ok(target.batch(mixed.items), "a mixed batch")
    by_id = envelope.result_map(response_json(resp), mixed.items)
    silent, wrong = {}, {}
    judged = 0
    for item_id in mixed.invalid:
        r = by_id.get(item_id)
        if r is None or r.ok is not False:
            continue  # CORE-03 reports it
        judged += 1
        signal = retry_signal(r)
        if signal is None:
            silent[item_id] = short(r.error if r.error is not None else r.raw, 200)
        elif signal:
            # A validation error cannot succeed when the same item is retried unchanged.
            wrong[item_id] = short(r.error if r.error is not None else r.raw, 200)
    # Errors found after validation (the store's unique key, a failed write) often come from another
    # code path than the validator's, one that forgets the flag. Only whether the error says it is
    # judged: the spec does not say whether a conflict can clear, so either answer is legal.
    clash_id, clash = _write_time_error(target, items, envelope)
    silent_on_write = {}
    if clash is not None:
        judged += 1
        if retry_signal(clash) is None:
            silent_on_write[clash_id] = short(clash.error if clash.error is not None else clash.raw, 200)
    if not judged:
        pytest.skip("no error result to judge (CORE-03 reports that)")
    expect(not silent, "an error result does not say whether retrying can succeed",
           expected="error.retryable (boolean) or 429/503 with Retry-After", seen=silent)
    expect(not silent_on_write, "the error of an item that failed when written (its id already exists) does not "
           "say whether retrying can succeed", expected="error.retryable (boolean) or 429/503 with Retry-After",
           seen=silent_on_write)
    expect(not wrong, "a validation error says retrying the unchanged item can succeed",
           expected="retryable: false for an invalid item", seen=wrong)
