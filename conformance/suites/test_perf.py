"""PERF — efficiency (informative). SPEC §4.

The check compares times measured in the same run, never absolute times: a slow machine or a slow
network makes both sides slower, a batch endpoint that is "just a wrapper" makes only the ratio bad.
"""
from __future__ import annotations

import statistics
from typing import Any

import pytest

from conformance.checks import Target, expect, response_json, series, setup_failed, setup_ok

MAX_RATIO = 0.2  # the rule: per-item time in a batch at most a fifth of one single request
DEFAULT_BATCH_SIZE = 100
DEFAULT_REPETITIONS = 11  # odd, so the median is a measured value
SINGLES_PER_ROUND = 3  # single requests are cheap: more samples steady their median
KEEP_TIMED_EVIDENCE = 2  # timed exchanges kept as evidence (the rest only as figures)


def _timed(target: Target, send: Any) -> tuple[Any, float]:
    """The response of `send()` and its time on the wire in ms (the target's work plus the network,
    without the kit's bookkeeping or its pace)."""
    start = len(target.evidence)
    resp = send()
    return resp, sum(ex.elapsed_ms or 0.0 for ex in target.evidence[start:])


def _spread(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3),
            "max": round(max(samples), 3)}


@pytest.mark.rule("PERF-01", clause="a batch of N items is measurably cheaper than N single "
                  "requests (interleaved rounds, ratio in the figures)")
def test_batch_is_not_just_a_wrapper(target, items, envelope, profile, figures):
    """PERF-01 SHOULD: the batch endpoint is not "just a wrapper": per-item time in a batch of 100 is at most a fifth of one single-endpoint request, measured in the same run; the report gives the ratio."""
    profile.require("endpoints.single")
    size = int(profile.get("perf.batch_size") or DEFAULT_BATCH_SIZE)
    limit = profile.get("limits.max_items")
    if limit is not None and int(limit) < size:
        size = int(limit)  # the target's own maximum; the figures say so
    if size < 2:
        pytest.skip(f"the batch limit ({limit}) leaves no batch to compare with a single request")
    rounds = int(profile.get("perf.repetitions") or DEFAULT_REPETITIONS)

    def one_batch() -> tuple[list[dict[str, Any]], float]:
        batch = items.valid(size)  # fresh items for every request: no replay, no conflict
        resp, ms = _timed(target, lambda: target.batch(batch, note="PERF-01 timed batch"))
        setup_ok(resp, f"a batch of {size} valid items")
        ok = sum(1 for r in envelope.result_map(response_json(resp), batch).values() if r.ok)
        if ok != size:
            setup_failed(f"only {ok} of {size} valid items of a batch succeeded, so its time measures "
                         "other work than the items'")
        return batch, ms

    def one_single() -> tuple[dict[str, Any], float]:
        item = items.one()
        resp, ms = _timed(target, lambda: target.single(item, note="PERF-01 timed single request"))
        setup_ok(resp, "a single-endpoint request with a valid item")
        return item, ms

    # Warm-up (connections, caches, lazily compiled code): not timed.
    one_single()
    one_batch()
    warm = len(target.evidence)

    single_ms: list[float] = []
    batch_ms: list[float] = []
    for k in range(rounds):
        # Interleaved, alternating which goes first, so drift in the machine's load hits both sides.
        if k % 2:
            single_ms.extend(one_single()[1] for _ in range(SINGLES_PER_ROUND))
        last_batch, ms = one_batch()
        batch_ms.append(ms)
        if not k % 2:
            single_ms.extend(one_single()[1] for _ in range(SINGLES_PER_ROUND))
    last_single, ms = one_single()
    single_ms.append(ms)

    # The times count only if the work was done: read some of it back.
    timed = len(target.evidence)
    if profile.get("endpoints.read"):
        for it in (last_batch[0], last_batch[-1], last_single):
            item_id = items.id_of(it)
            if not target.exists(item_id):
                setup_failed(f"item {item_id!r} reported ok is not readable, so the times measure no work")
    # Keep the warm-up, the last timed exchanges and the read-backs; the rest are only figures.
    dropped = timed - warm - KEEP_TIMED_EVIDENCE
    if dropped > 0:
        del target.evidence[warm:timed - KEEP_TIMED_EVIDENCE]
        target.evidence[warm].note = (f"{target.evidence[warm].note or ''} ({dropped} earlier timed "
                                      "exchanges omitted; their times are in the figures)").strip()

    single = statistics.median(single_ms)
    per_item = statistics.median(batch_ms) / size
    ratio = per_item / single if single > 0 else float("inf")
    summary = (f"per-item time in a batch of {size}: {per_item:.4f} ms vs {single:.3f} ms for one single "
               f"request, ratio {ratio:.3f} (at most {MAX_RATIO:g}); medians of {len(batch_ms)} batches and "
               f"{len(single_ms)} single requests, interleaved")
    figures.update({
        "batch_size": size, "repetitions": rounds,
        "single_request_ms": _spread(single_ms), "batch_ms": _spread(batch_ms),
        "batch_per_item_ms": round(per_item, 4), "ratio": round(ratio, 4), "max_ratio": MAX_RATIO,
        "per_item_speedup": round(single / per_item, 1) if per_item > 0 else None,
        "summary": summary,
    })
    series(f"cost of one item: single request vs inside a batch of {size} (medians)",
           [("one single request", single), (f"one item in a batch of {size}", per_item)], x="", y="ms", unit="ms",
           kind="bar")
    expect(ratio <= MAX_RATIO, "the batch endpoint looks like \"just a wrapper\": an item in a batch costs "
           f"more than a fifth of a single request ({summary})",
           expected=f"batch per-item time / single request time <= {MAX_RATIO:g}", seen=f"{ratio:.3f}")
