"""FLEET — one service, several instances, where the profile lists `target.instances`. SPEC §4.

A real batch API runs as several instances behind a load balancer; a retry, a concurrent duplicate
or a poll may land on any of them. These checks address every instance directly (the base URL is
the first; `target.instances` lists the others): effects are read back on every instance right
after the 2xx that acknowledged them (no grace period: a client's next request may land anywhere),
keyed retries go to another instance than the first attempt, concurrent duplicates are spread over
the instances, and jobs are polled and cancelled round-robin. Effects are verified through the read
endpoint, never taken from a response. FLEET-05 (an instance dying mid-job) cannot be caused over
HTTP: its check SKIPs with that reason, and the kit's own tests check it on the reference server.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conformance.checks import (Jobs, effects, expect, is_2xx, json_of, key_header, new_key, observed, outcomes,
                               setup_failed, setup_ok, short)

READ_WAIT_S = 0.3  # how long a cancelled job is watched for further progress on every instance


@pytest.fixture
def fleet(target, profile) -> list[Any]:
    """One view of the target per instance, the base URL first."""
    urls = profile.instances
    if len(urls) < 2:
        pytest.skip("profile lists no target.instances (other base URLs of the same service)")
    return [target.on(url) for url in urls]


def _ids(items, batch: list[dict[str, Any]]) -> list[Any]:
    return [it[items.id_field] for it in batch]


def _name(k: int, fleet: list[Any]) -> str:
    return f"instance {k + 1} of {len(fleet)} ({fleet[k].base_url})"


# -- FLEET-01 ---------------------------------------------------------------------------------------

@pytest.mark.rule("FLEET-01", clause="after a 2xx, every applied item is readable on every instance")
def test_applied_items_are_readable_on_every_instance(fleet, items, envelope, profile):
    """FLEET-01 MUST: after a 2xx, every applied item is readable on every instance (no instance-local store)."""
    profile.require("endpoints.read")
    for k, writer in enumerate(fleet):
        batch = items.valid(3)
        resp = setup_ok(writer.batch(batch, note=f"a batch on {_name(k, fleet)}"), "a batch")
        by_id = envelope.result_map(resp, batch)
        applied = [i for i in _ids(items, batch) if by_id.get(i) is not None and by_id[i].ok]
        if not applied:
            setup_failed(f"no item of a valid batch on {_name(k, fleet)} got an ok result (PART-01 reports it)")
        # The other instances first, at once: a client's next request may land on any of them.
        order = [j for j in range(len(fleet)) if j != k] + [k]
        seen: dict[int, dict[Any, Any]] = {}
        for j in order:
            seen[j] = {}
            for item_id in applied:
                doc = fleet[j].read_json(item_id)
                expect(doc is not None,
                       f"item {item_id!r}, applied by {_name(k, fleet)} (2xx), is not readable on {_name(j, fleet)}",
                       expected="readable on every instance right after the 2xx", seen="not found")
                seen[j][item_id] = doc
        sent = {it[items.id_field]: it for it in batch}
        for item_id in applied:
            mine = seen[k][item_id]
            for j in order[:-1]:
                theirs = seen[j][item_id]
                fields = [f for f in sent[item_id] if isinstance(mine, dict) and f in mine]
                differ = {f: (mine.get(f), theirs.get(f) if isinstance(theirs, dict) else None) for f in fields
                          if not isinstance(theirs, dict) or theirs.get(f) != mine.get(f)}
                expect(not differ, f"item {item_id!r} reads differently on {_name(j, fleet)} than on the "
                                   f"instance that applied it", expected=mine, seen=theirs)


# -- FLEET-02 ---------------------------------------------------------------------------------------

@pytest.mark.rule("FLEET-02", clause="a batch retried with the same key on another instance is a replay: "
                                     "applied once, same answer, marked where the target marks replays")
def test_keyed_retry_on_another_instance_is_a_replay(fleet, items, envelope, profile):
    """FLEET-02 MUST: a batch retried with the same idempotency key on another instance is a replay: applied once, same answer (the marker of IDEM-04 where the target has one)."""
    header = key_header(profile)
    marker = str(profile.get("idempotency.replayed_header") or "Idempotent-Replayed")
    key = new_key(items, "fleet")
    batch = items.valid(3)
    ids = _ids(items, batch)
    first = setup_ok(fleet[0].batch(batch, headers={header: key}, note=f"first attempt on {_name(0, fleet)}"),
                     "a keyed batch")
    before = effects(fleet[0], profile, ids) if profile.get("endpoints.read") else None
    for k in range(1, len(fleet)):
        again = fleet[k].batch(batch, headers={header: key}, note=f"the retry, same key and body, on {_name(k, fleet)}")
        expect(is_2xx(again) and again.status_code == first.status_code
               and outcomes(envelope, again, batch) == outcomes(envelope, first, batch),
               f"the retry on {_name(k, fleet)} was not a replay of the first attempt's answer: the key is not "
               "known there (instance-local idempotency) and the batch was processed again",
               expected=f"{first.status_code}: {short(first.text, 300)}",
               seen=f"{again.status_code}: {short(again.text, 300)}")
    if before is None:
        observed("no endpoints.read: applications were judged by the answers only")
    else:
        after = effects(fleet[0], profile, ids)
        expect(after == before, "the retries on other instances applied the batch again (read endpoint)",
               expected=before, seen=after)
    # IDEM-04's marker: where a replay on the first instance is marked, so must one on another be.
    home = fleet[0].batch(batch, headers={header: key}, note=f"the retry on {_name(0, fleet)} (is a replay marked?)")
    if home.headers.get(marker, "").strip().lower() != "true":
        observed(f"replays on the first instance carry no {marker}: true, so the marker was not compared")
    else:
        for k in range(1, len(fleet)):
            again = fleet[k].batch(batch, headers={header: key}, note=f"the retry on {_name(k, fleet)} again")
            expect(again.headers.get(marker, "").strip().lower() == "true",
                   f"a replay on {_name(k, fleet)} is not marked, although replays on the first instance are",
                   expected=f"{marker}: true", seen=f"{marker}: {again.headers.get(marker)!r}")


# -- FLEET-03 ---------------------------------------------------------------------------------------

@pytest.mark.rule("FLEET-03", clause="the same keyed batch sent concurrently to different instances is applied "
                                     "once; the others replay it or get 409")
def test_concurrent_duplicates_over_instances_apply_once(fleet, items, envelope, profile):
    """FLEET-03 MUST: the same keyed batch sent concurrently to different instances is applied once; the others replay it or get 409."""
    # A race is a matter of chance: a fleet that guards in-flight keys per instance double-applies
    # only when duplicates on two instances are in flight together. One round let such a mutant
    # through once in a CI run; several rounds (each judged, a fresh key each) make a miss rare.
    control = None
    overlapped = 0
    for round_ in range(1, FLEET_03_ROUNDS + 1):
        together, control = _duplicates_over_instances(fleet, items, envelope, profile, round_, control)
        overlapped += together
    if not overlapped:
        observed(f"in {FLEET_03_ROUNDS} rounds, no duplicate was in flight on two instances at once (each "
                 "instance's first answer came before another instance's duplicate was sent): only "
                 "duplicates that may have arrived after the first answer were judged")


FLEET_03_ROUNDS = 3


def _duplicates_over_instances(fleet, items, envelope, profile, round_: int, control: Any) -> tuple[bool, Any]:
    """One round of FLEET-03: the same keyed batch sent at once, round-robin over the instances;
    judged. Returns whether duplicates were in flight on two instances together, and the effect
    counter of an item applied once (read once, on the first round that needs it)."""
    header = key_header(profile)
    key = new_key(items, "fleet")
    batch = items.valid(3)
    ids = _ids(items, batch)
    n = max(4, 2 * len(fleet))
    body = fleet[0].batch_body(batch)  # encoded once: no duplicate waits on its own encoding
    start = threading.Barrier(n)
    sent_at = [0.0] * n
    answered_at = [0.0] * n

    def fire(k: int) -> Any:
        start.wait(timeout=30)
        at = k % len(fleet)
        sent_at[k] = time.monotonic()
        resp = fleet[at].batch(batch, headers={header: key}, body=body,
                               note=f"round {round_}: concurrent duplicate {k + 1} of {n}, on {_name(at, fleet)}")
        answered_at[k] = time.monotonic()
        return at, resp

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(fire, range(n)))
    # In flight together on two instances: two duplicates on different instances whose times from
    # sending to answer overlap.
    together = any(sent_at[k] < answered_at[j] and sent_at[j] < answered_at[k]
                   for k in range(n) for j in range(n) if k % len(fleet) != j % len(fleet))
    answered = [(at, r) for at, r in answers if is_2xx(r)]
    in_use = [(at, r) for at, r in answers if r.status_code == 409
              and envelope.has_error_code(r, "idempotency_key_in_use")]
    other = [(at, r) for at, r in answers if (at, r) not in answered and (at, r) not in in_use]
    expect(not other, f"round {round_}: a concurrent duplicate got neither a 2xx (processed or replayed) nor 409 "
                      "idempotency_key_in_use",
           expected=f"2xx or 409 {envelope.code('idempotency_key_in_use')}",
           seen=[f"{_name(at, fleet)}: {r.status_code}: {short(r.text, 200)}" for at, r in other])
    expect(answered, f"round {round_}: no concurrent duplicate was processed", expected="one 2xx",
           seen=[r.status_code for _, r in answers])
    first = outcomes(envelope, answered[0][1], batch)
    differing = [f"{_name(at, fleet)}: {short(r.text, 300)}" for at, r in answered[1:]
                 if outcomes(envelope, r, batch) != first]
    expect(not differing, f"round {round_}: concurrent duplicates on different instances got different answers: "
                          "the batch was processed more than once",
           expected=f"one processed answer and its replays: {short(answered[0][1].text, 300)}", seen=differing)
    if not profile.get("endpoints.read"):
        if round_ == 1:
            observed("no endpoints.read: applications were judged by the answers only")
        return together, control
    hosts = sorted({at for at, _ in answered})
    state = effects(fleet[hosts[0]], profile, ids)
    absent = [i for i, v in state.items() if v is None]
    expect(not absent, f"round {round_}: items of the processed duplicate are not readable",
           expected="every item applied", seen=f"absent: {absent}")
    counter = profile.get("items.effect_counter")
    if counter:
        if control is None:
            one = items.one()
            setup_ok(fleet[hosts[0]].batch([one], headers={header: new_key(items, "fleet")},
                                           note="control item, applied once"), "a control batch")
            control = effects(fleet[hosts[0]], profile, [one[items.id_field]])[one[items.id_field]]
        twice = {i: v for i, v in state.items() if v != control}
        expect(not twice, f"round {round_}: an item was applied more than once by the concurrent duplicates "
                          "(effect counter)", expected=f"{counter} = {control!r} (applied once)", seen=twice)
    return together, control


# -- FLEET-04 ---------------------------------------------------------------------------------------

def _job_size(profile, item: dict[str, Any], default: int) -> int:
    import json

    n = int(profile.get("async.cancel_items", default))
    if profile.get("limits.async_max_items"):
        n = min(n, int(profile.get("limits.async_max_items")))
    if profile.get("limits.max_bytes"):  # stay under the body limit
        n = min(n, int(int(profile.get("limits.max_bytes")) / (1.3 * (len(json.dumps(item)) + 16))))
    return max(2, n)


def _jobs(fleet, envelope) -> list[Jobs]:
    if envelope.failures_only:
        pytest.skip("failure-only results (envelope.results_mode): a job's results are not read in that form")
    return [Jobs(on, envelope) for on in fleet]


# Rounds of one job per instance submitted at once (see the check): at least JOB_ROUNDS, and on until
# they span JOB_SPAN_S. Ids made per instance from the clock and a sequence (per second, per
# millisecond...) collide only where both instances number their jobs alike within one unit of time: a
# round that straddles a boundary, or a job one instance alone made earlier in that unit, puts their
# sequences out of step until the next unit begins, where both start again from the same number. The
# full kill matrix's fleet.job_ids_made_per_instance went unseen over 2 rounds, then over 4 (all within
# one second); rounds spanning more than a second always reach a second both instances start afresh.
JOB_ROUNDS = 4
JOB_SPAN_S = 1.2
JOB_MAX_ROUNDS = 24


# Defined before the other FLEET-04 checks: in a run of FLEET alone, its jobs are then the first each
# instance numbers, which is when per-instance sequences meet (the kit's other checks send their jobs
# to the first instance only, so they skew its sequence).
@pytest.mark.rule("FLEET-04", clause="jobs submitted at once to different instances (rounds over 1.2 s) get different job "
                                     "ids, and each reads as itself (its own items and total) on every instance")
def test_jobs_submitted_to_different_instances_stay_apart(fleet, items, envelope, profile):
    """FLEET-04 MUST: an async job submitted to one instance is visible, progresses and can be cancelled from every other instance."""
    profile.require("endpoints.async")
    jobs = _jobs(fleet, envelope)
    # A load balancer hands simultaneous jobs to different instances. Ids each instance makes on its
    # own (a per-process sequence, a generator given the same node id everywhere, a clock and a local
    # counter) collide there, and a job saved over another under the same id replaces it: the first
    # client then reads someone else's job under its own id. Sizes differ, so that even items without
    # ids tell the jobs apart.
    submitted: list[tuple[int, list[dict[str, Any]], Any]] = []
    cap = int(profile.get("limits.async_max_items") or 1000)
    began = time.monotonic()
    for round_ in range(1, JOB_MAX_ROUNDS + 1):
        if round_ > JOB_ROUNDS:
            if time.monotonic() - began >= JOB_SPAN_S:
                break
            time.sleep(JOB_SPAN_S / (JOB_MAX_ROUNDS - JOB_ROUNDS))
        batches = [items.valid(min(2 + len(submitted) + k, cap)) for k in range(len(fleet))]
        start = threading.Barrier(len(fleet))

        def submit(k: int) -> Any:
            start.wait(timeout=30)
            return jobs[k].create(batches[k], note=f"round {round_}: a job on {_name(k, fleet)}, sent at once "
                                                   "with one on every other instance")

        with ThreadPoolExecutor(len(fleet)) as pool:
            accs = list(pool.map(submit, range(len(fleet))))
        submitted += [(k, batches[k], accs[k]) for k in range(len(fleet))]
    # One URL per job, as the first instance reaches each (the same id makes the same job URL).
    where: dict[str, list[str]] = {}
    for n, (k, _, acc) in enumerate(submitted):
        where.setdefault(jobs[0].url_of(acc), []).append(f"job {n + 1} (on {_name(k, fleet)}, id {acc.job_id!r})")
    shared = [names for names in where.values() if len(names) > 1]
    expect(not shared, "jobs submitted to different instances got the same job id: one job replaces or hides "
                       "the other (ids made per instance)",
           expected="a distinct job id for every job", seen=shared)
    for k, _, acc in submitted:
        jobs[k].wait_done(jobs[k].url_of(acc), what=f"wait for the job submitted to {_name(k, fleet)}")
    by_ids = items.has_ids and not envelope.by_position
    for n, (k, batch, acc) in enumerate(submitted):
        own = sorted(map(str, (items.id_of(it) for it in batch)))
        for j in range(len(fleet)):
            snap = jobs[j].read(jobs[j].url_of(acc), note=f"job {n + 1} (submitted to {_name(k, fleet)}) on "
                                                          f"{_name(j, fleet)}")
            expect(snap.ok and snap.status is not None,
                   f"job {n + 1}, submitted to {_name(k, fleet)}, is not visible on {_name(j, fleet)}",
                   expected="the job resource (2xx, a known status)",
                   seen=f"{snap.http_status}: {short(snap.doc, 300)}")
            total = snap.count("total")
            got = sorted(map(str, (r.id for r in snap.results))) if by_ids else None
            itself = got == own if by_ids else len(snap.results) == len(batch)
            expect((total is None or total == len(batch)) and itself,
                   f"job {n + 1}, submitted to {_name(k, fleet)}, reads as another job on {_name(j, fleet)}",
                   expected=f"its own {len(batch)} items" + (f": {own}" if by_ids else ""),
                   seen=f"{snap.progress()}" + (f"; results for {got}" if by_ids else ""))


@pytest.mark.rule("FLEET-04", clause="an async job submitted to one instance is visible and progresses on every "
                                     "other instance")
def test_job_is_visible_and_progresses_on_every_instance(fleet, items, envelope, profile):
    """FLEET-04 MUST: an async job submitted to one instance is visible, progresses and can be cancelled from every other instance."""
    profile.require("endpoints.async")
    jobs = _jobs(fleet, envelope)
    batch = items.valid(min(200, _job_size(profile, items.one(), 200)))
    acc = jobs[0].create(batch, note=f"create the job on {_name(0, fleet)}")
    deadline = time.monotonic() + jobs[0].deadline_s
    last_done, last_at, polls = -1, None, 0
    read_by: set[int] = set()
    running_on: set[int] = set()  # instances that showed the job before its end
    # Round-robin, the other instances first; after the end, one more read on each instance.
    while True:
        k = (polls + 1) % len(fleet)
        polls += 1
        snap = jobs[k].read(jobs[k].url_of(acc), note=f"poll {polls} on {_name(k, fleet)}")
        expect(snap.ok and snap.status is not None,
               f"the job submitted to {_name(0, fleet)} is not visible on {_name(k, fleet)}",
               expected="the job resource (2xx, a known status)", seen=f"{snap.http_status}: {short(snap.doc, 300)}")
        read_by.add(k)
        if not snap.terminal:
            running_on.add(k)
        done = (snap.count("succeeded") or 0) + (snap.count("failed") or 0)
        expect(done >= last_done, f"the job's progress went back on {_name(k, fleet)} (a lagging or separate "
                                  "job store)", expected=f">= {last_done} items done (seen on {last_at})",
               seen=snap.progress())
        last_done, last_at = done, _name(k, fleet)
        if snap.terminal and len(read_by) == len(fleet):
            break
        if time.monotonic() > deadline:
            setup_failed(f"the job did not end within {jobs[0].deadline_s:g}s (ASYNC-04 reports it)")
        if not snap.terminal:
            time.sleep(min(jobs[0].interval, jobs[0].max_wait))
    if not running_on - {0}:
        observed("the job had ended before another instance read it: progress was seen only as its end")
    expect(last_done == len(batch), "the job ended without a result for every item on every instance",
           expected=f"{len(batch)} items done", seen=snap.progress())
    finals = {}
    for k in range(len(fleet)):
        s = jobs[k].read(jobs[k].url_of(acc), note=f"the ended job on {_name(k, fleet)}")
        finals[k] = (s.status, s.counts, len(s.results))
    expect(len(set(map(repr, finals.values()))) == 1, "the ended job reads differently on different instances",
           expected="the same status, counts and results everywhere",
           seen={_name(k, fleet): v for k, v in finals.items()})


@pytest.mark.rule("FLEET-04", clause="an async job submitted to one instance can be cancelled from another instance")
def test_job_can_be_cancelled_from_another_instance(fleet, items, envelope, profile):
    """FLEET-04 MUST: an async job submitted to one instance is visible, progresses and can be cancelled from every other instance."""
    profile.require("endpoints.async", "endpoints.cancel")
    jobs = _jobs(fleet, envelope)
    ended = ""
    for attempt in range(3):
        k = 1 + attempt % (len(fleet) - 1)  # the canceller: another instance than the submitter
        batch = items.valid(_job_size(profile, items.one(), 2000))
        acc = jobs[0].create(batch, note=f"create the job on {_name(0, fleet)}")
        resp = jobs[k].cancel(acc.job_id, note=f"cancel the job on {_name(k, fleet)}")
        expect(resp.status_code not in (404, 405, 501),
               f"the job submitted to {_name(0, fleet)} cannot be cancelled on {_name(k, fleet)}",
               expected="2xx", seen=f"{resp.status_code}: {short(resp.text, 200)}")
        last = jobs[0].wait_done(jobs[0].url_of(acc))
        answered, _ = jobs[k].map.status(json_of(resp))
        if last.status == "completed" and (not is_2xx(resp) or answered == "completed"):
            ended = f"the job had ended before the cancel arrived ({resp.status_code})"
            continue
        expect(is_2xx(resp), f"the cancel on {_name(k, fleet)} was not accepted", expected="2xx",
               seen=f"{resp.status_code}: {short(resp.text, 200)}")
        break
    else:
        pytest.skip(f"{ended} in 3 attempts; raise async.cancel_items")
    expect(last.status == "cancelled", f"the cancel accepted by {_name(k, fleet)} did not stop the job",
           expected="cancelled", seen=last.progress())
    time.sleep(READ_WAIT_S)
    for j in range(len(fleet)):
        snap = jobs[j].read(jobs[j].url_of(acc), note=f"the cancelled job on {_name(j, fleet)}")
        expect(snap.ok and snap.status == "cancelled" and snap.counts == last.counts,
               f"the cancelled job reads otherwise (or went on) on {_name(j, fleet)}",
               expected=f"cancelled, {last.counts}", seen=snap.progress() if snap.ok else snap.http_status)


# -- FLEET-05 ---------------------------------------------------------------------------------------

@pytest.mark.rule("FLEET-05", clause="an instance that dies mid-job loses no item and applies none twice")
def test_instance_death_mid_job_loses_and_repeats_nothing(profile):
    """FLEET-05 MUST: an instance that dies mid-job loses no item and applies none twice."""
    pytest.skip("the death of an instance can be neither caused nor observed over HTTP; the kit's own tests "
                "check it on the reference server (tests/test_fleet_reference.py: an instance SIGKILLed "
                "mid-job, another takes the job over, every item applied exactly once)")
