"""ROB — robustness: fuzzing from the target's OpenAPI, a hostile corpus, recovery. SPEC §4.

These checks stress the target; they run only where the profile declares the ROB class.
"""
from __future__ import annotations

import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import pytest

from conformance.checks import SetupError, as_stored, expect, fuzz, hostile, is_2xx, json_of, observed, short

DEFAULT_MAX_EXAMPLES = 20


DEFAULT_OTHER_EXAMPLES = 10
DEFAULT_SECONDS_PER_OPERATION = 4.0
DEFAULT_SECONDS = 4.0  # the whole ROB-01 fuzzing, shared among the operations


def _real_ids(target: Any, profile: Any, items: Any) -> dict[str, Any]:
    """Path values that name real resources, so reads reach one: an item stored by one small batch,
    and a job of the async endpoint (both through declared operations; none if they fail)."""
    from conformance.checks import Jobs

    out: dict[str, Any] = {}
    one = items.one()
    resp = target.batch([one], note="ROB-01: one item, so the read operation has a real id")
    if is_2xx(resp):
        out["item"] = items.id_of(one)
    if profile.get("endpoints.async") and profile.get("endpoints.job"):
        try:
            out["job"] = Jobs(target, target.envelope).create(items.valid(1)).job_id
        except Exception:  # noqa: BLE001 - ASYNC-01 judges the job endpoint; ROB-01 then uses generated ids
            pass
    return out


def _path_values(path: str, method: str, profile: Any, real: dict[str, Any]) -> dict[str, Any]:
    import re

    names = re.findall(r"\{([^}]+)\}", path)
    if not names or method != "GET":  # never a real id under a method that may change or delete it
        return {}
    for kind, ep in (("job", "endpoints.job"), ("item", "endpoints.read")):
        declared = profile.get(ep)
        if declared and kind in real and re.sub(r"\{[^}]+\}", "{}", declared.get("path", "")) == \
                re.sub(r"\{[^}]+\}", "{}", path):
            return {names[-1]: real[kind]}
    return {}


# process=True: its time is its own CPU (drawing schemathesis's cases), so where the run has a child
# process for it (the CLI's) it runs there, on the second core (conformance/_child.py).
@pytest.mark.concurrent(seconds=5, process=True)
@pytest.mark.rule("ROB-01", clause="property-based fuzzing (schemathesis, from the target's OpenAPI) of every "
                  "operation the document declares finds no 5xx and no response outside the documented schemas")
def test_fuzzing_finds_no_5xx_and_no_undocumented_response(target, profile, figures, items):
    """ROB-01 MUST: property-based fuzzing of the batch endpoints (schemathesis, from the target's OpenAPI) finds no 5xx and no response outside the documented schemas."""

    try:
        import schemathesis
    except ImportError:
        pytest.skip("schemathesis is not installed (pip install 'schemathesis>=4,<5')")
    doc, source = fuzz.load_openapi(target, profile)
    if doc is None:
        pytest.skip(f"no OpenAPI document: {source}")
    try:
        schema = schemathesis.openapi.from_dict(doc)
        # Strings over all of Unicode but lone surrogates, as with the default codec "utf-8", but
        # without hypothesis computing that codec's table on its first use in a directory (a list
        # of 1.1 million intervals: +130 MiB of the run's peak memory and ~2 s, issue 18).
        schema.config.generation.codec = None
        operations, broken = fuzz.all_operations(schema)
        _, missing = fuzz.batch_operations(schema, profile)
    except Exception as exc:  # the document or schemathesis failed: the rule could not be judged
        raise SetupError(f"the OpenAPI document ({source}) cannot be used by schemathesis: "
                         f"{type(exc).__name__}: {exc}") from None
    if broken:
        raise SetupError(f"schemathesis cannot use {len(broken)} operation(s) of the OpenAPI document ({source}): "
                         + "; ".join(broken[:3]))
    if not operations:
        raise SetupError(f"the OpenAPI document ({source}) declares no operation")
    max_examples = int(profile.get("rob.max_examples") or DEFAULT_MAX_EXAMPLES)
    other_examples = int(profile.get("rob.other_max_examples") or min(max_examples, DEFAULT_OTHER_EXAMPLES))
    budget = float(profile.get("rob.seconds_per_operation") or DEFAULT_SECONDS_PER_OPERATION)
    seed = profile.get("rob.seed")
    seed = int(seed) if seed is not None else random.randrange(2**31)
    batch = fuzz.batch_paths(profile)
    labels = [op.method.upper() + " " + op.path for _, op in operations]
    figures.update(seed=seed, max_examples=max_examples, other_max_examples=other_examples,
                   seconds_per_operation=budget, seconds=float(profile.get("rob.seconds") or DEFAULT_SECONDS), openapi=source, operations=labels,
                   undocumented_batch_endpoints=missing)
    run = fuzz.FuzzRun()
    redact = target.redact
    real = _real_ids(target, profile, items)
    by_path: dict[str, set[str]] = {}
    total = float(profile.get("rob.seconds") or DEFAULT_SECONDS)
    deadline = time.monotonic() + total
    for k, (path, op) in enumerate(operations):
        method = op.method.upper()
        by_path.setdefault(path, set()).add(method)
        lenient = (method, path) in batch
        n = max_examples if lenient else other_examples
        values = _path_values(path, method, profile, real)
        # Bounded twice: per operation, and the whole check shares `rob.seconds` among what is left.
        share = min(budget, max(0.2, (deadline - time.monotonic()) / (len(operations) - k)))
        fuzz.structural(target, path, op, run=run, redact=redact, lenient=lenient)  # outside the budget: instant
        for mode in ("positive", "negative"):
            if not run.stopped:
                fuzz.fuzz(target, path, op, mode, max_examples=n, seed=seed, run=run, redact=redact,
                           budget_s=share / 2, lenient=lenient, path_values=values)
    for path, declared in by_path.items():
        if not run.stopped:
            fuzz.probe_methods(target, path, declared, _path_values(path, "GET", profile, real), run, redact)
    figures.update(cases_sent=run.sent, responses=run.by_status, findings=len(run.findings),
                   noise_per_item_errors=run.noise, over_budget=sorted(run.over_budget),
                   not_generated=sorted(run.not_generated))
    if run.over_budget:
        observed(f"fuzzing reached its time budget (rob.seconds, rob.seconds_per_operation) for "
                 f"{', '.join(sorted(run.over_budget))}: not every generated case was sent")
    shown = [f"[{f.mode} {f.operation}] {f.problem} — body {short(f.request, 200)} — {f.curl}"
             for f in run.findings[:8]]
    expect(not run.findings,
           f"fuzzing {len(operations)} operation(s) (seed {seed}) found {len(run.findings)} case(s) answered "
           "with a 5xx, no answer, or a response outside the documented ones"
           + (f"; {run.stopped}" if run.stopped else "")
           + f" (replay: set rob.seed: {seed} in the profile)",
           expected="no 5xx; documented status codes, bodies and content types; 405 naming every declared method",
           seen=shown)
    figures["summary"] = (f"{run.sent} cases over {len(operations)} operations, seed {seed}"
                          + (f"; time budget reached for {len(run.over_budget)} operation/mode(s)"
                             if run.over_budget else "")
                          + (f"; {sum(run.noise.values())} schema-violating bodies answered 2xx with per-item "
                             "errors on batch endpoints (the spec's rule, not counted)" if run.noise else ""))


def _can_read(target: Any) -> bool:
    """Whether effects can be read back; without endpoints.read the answers alone are judged (a 5xx or a
    hang is a finding all the same), and the PASS says what was not read."""
    if target.profile.get("endpoints.read"):
        return True
    observed("no endpoints.read: hostile items' effects (applied, stored unaltered) were not read back")
    return False


def _judge(case: hostile.HostileCase, built: hostile.BuiltBody, resp: httpx.Response, target: Any, envelope: Any,
           items: Any) -> str | None:
    status = resp.status_code
    if status >= 500:
        return f"answered {status}: {short(resp.text, 160)}"
    is_4xx = 400 <= status < 500
    if case.expect == "4xx":
        return None if is_4xx else f"expected a 4xx, got {status}"
    if is_4xx and case.expect in ("4xx-or-item-error", "4xx-or-processed", "clean", "clean-or-coerced"):
        return None
    if case.expect in ("4xx-or-item-error", "clean", "clean-or-coerced", "processed", "4xx-or-processed") \
            and not is_2xx(resp):
        return f"expected {case.expect}, got {status}"
    if json_of(resp) is None:
        return f"answered {status} with a body that is not JSON"
    if built.unidentified:
        return f"answered {status}: items that carry no id cannot get a result (expected a 4xx)"
    by_id = envelope.result_map(resp, built.items)
    if case.expect == "4xx-or-processed" and not built.hostile:
        # the whole body is hostile (a BOM): every item must be processed and readable
        wanted = [it for it in built.items if isinstance(it, dict) and items.id_of(it) is not None]
        for it in wanted:
            r = by_id.get(items.id_of(it))
            if r is None or r.ok is not True:
                return f"answered {status} but item {items.id_of(it)!r} was not processed ({short(r.raw if r else None, 160)})"
            if _can_read(target) and not target.exists(items.id_of(it)):
                return f"item {items.id_of(it)!r} got an ok result but cannot be read back"
        return None
    for h in built.hostile:
        r = by_id.get(h["id"])
        if r is None:
            return f"answered {status} with no result for hostile item {short(h['id'], 80)}"
        if r.ok is False:
            if case.expect == "processed":
                return f"hostile item {short(h['id'], 80)} was refused ({r.error_code}), expected it to be processed"
            if h["readable"] and _can_read(target) and target.exists(h["id"]):
                return f"hostile item {short(h['id'], 80)} got an error result but was applied"
            continue
        if r.ok is not True:
            return f"hostile item {short(h['id'], 80)} has a result that is neither ok nor error"
        if case.expect == "4xx-or-item-error":
            return f"hostile item {short(h['id'], 80)} was accepted (ok), expected a 4xx or an error result"
        if not h["readable"] or not _can_read(target):
            continue
        stored = target.read_json(h["id"])
        if stored is None:
            return f"hostile item {short(h['id'], 80)} got an ok result but cannot be read back"
        item = h["item"] or {}
        if "loose" in h:
            # a wrong scalar accepted: the server may have coerced it ("12" for 12) or dropped a null,
            # so that member is not compared; every other member must read back as sent
            item = hostile.without_member(item, h["loose"])
        sent = as_stored(item, stored, items.id_pointer)  # the part the read shows (/Put/Item)
        wrong = {k: (v, stored.get(k) if isinstance(stored, dict) else None) for k, v in sent.items()
                 if not isinstance(stored, dict) or not _same_value(v, stored.get(k))}
        if wrong:
            return f"hostile item {short(h['id'], 80)} was stored altered: {short(wrong, 200)}"
    return None


def _same_value(sent: Any, stored: Any) -> bool:
    """Whether a member reads back as sent. A number may legally come back as the same number in a
    decimal string (12.5 as "12.50": money kept as DECIMAL, variation ord.money_as_decimal_strings):
    the hostile cases are about what surrounds the numbers (ids, strings, keys), not their JSON type."""
    if sent == stored:
        return True
    numbers = [v for v in (sent, stored) if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    if len(numbers) != 2 or isinstance(sent, str) == isinstance(stored, str):
        return False
    try:
        return Decimal(str(sent).strip()) == Decimal(str(stored).strip())
    except (InvalidOperation, ValueError):
        return False


def _run_case(case: hostile.HostileCase, target: Any, items: Any, envelope: Any, profile: Any,
              timeout: float | None = None) -> str | None:
    """Send one case; the problem with its answer, or None when it was rejected (or handled) cleanly."""
    built = hostile.build(case, items, envelope, profile.get("limits.max_bytes"))
    headers = {"Content-Type": envelope.content_type}
    if case.raw_mode:
        lying = case.raw_mode == "lying_length"
        out = target.raw("batch", content=built.content, headers=headers, timeout=timeout,
                         declared_length=len(built.content) + 100 if lying else len(built.content),
                         send_bytes=None if lying else len(built.content) // 2, half_close=not lying,
                         note=f"ROB-02 hostile case {case.name}: "
                              + ("Content-Length 100 bytes over the body" if lying else "half the body, then closed"))
        if out.hung:
            return f"no answer and no close within {timeout or target.timeout:g}s (a hang)"
        if out.status is not None and out.status >= 500:
            return f"answered {out.status}"
        if out.status is not None and not 400 <= out.status < 500:
            return f"expected a 4xx or a close, got {out.status}"
        return None
    try:
        resp = target.call("batch", content=built.content, headers=headers, timeout=timeout,
                           note=f"ROB-02 hostile case {case.name}")
    except httpx.TimeoutException:
        return "no answer within the timeout (a hang)"
    except httpx.TransportError as exc:
        return f"the connection was dropped ({type(exc).__name__})"
    return _judge(case, built, resp, target, envelope, items)


@pytest.mark.rule("ROB-02", clause="every case of the hostile corpus gets a clean answer (4xx, or "
                  "per-item handling as its label says), never a 5xx, a hang or a "
                  "dropped connection")
def test_hostile_inputs_rejected_cleanly(target, items, envelope, profile, figures):
    """ROB-02 MUST: hostile inputs get a 4xx, never a 5xx or a hang: deep nesting, huge numbers, NaN/Infinity, invalid UTF-8, null items, wrong types, very long strings, non-ASCII ids."""
    target.endpoint("batch")
    cases = hostile.load_corpus()
    failures: list[str] = []
    skipped: list[str] = []
    stopped = ""
    for case in cases:
        if case.raw_mode == "lying_length":
            continue  # the check below holds it, beside the other checks where the target allows
        if case.raw_mode and target.in_process:
            skipped.append(case.name)
            continue
        problem = _run_case(case, target, items, envelope, profile)
        if problem:
            failures.append(f"{case.name} ({case.expect}): {problem}")
            if "a hang" in problem:
                stopped = f"; stopped after the hang on {case.name} to keep the run bounded"
                break
            if target.stopped_answering:
                break  # the cases after it would only be refused; the engine names this case (conformance._down)
    figures.update(cases=len(cases), failed=len(failures), skipped_in_process=skipped)
    expect(not failures,
           f"{len(failures)} hostile input(s) not rejected cleanly: "
           + ", ".join(f.split(" ", 1)[0] for f in failures) + stopped,
           expected="per case, the answer the corpus expects (conformance/corpus/hostile.yaml); never 5xx or a hang",
           seen=failures)


@pytest.mark.rule("ROB-02", clause="a hostile item the target accepted (ok), sent again in the same body (a "
                  "client's retry), gets a clean answer too: a 4xx, or a 2xx with a result for each hostile item; "
                  "never a 5xx, a hang or a dropped connection")
def test_hostile_items_sent_again_answered_cleanly(target, items, envelope, profile, figures):
    """ROB-02 MUST: hostile inputs get a 4xx, never a 5xx or a hang: deep nesting, huge numbers, NaN/Infinity, invalid UTF-8, null items, wrong types, very long strings, non-ASCII ids."""
    # An accepted hostile id or string meets other code when it comes again: the write-time path of an id
    # that already exists (a unique-key clash whose message or log line quotes the id, an upsert that
    # compares it) is not the first insert's. Clients retry, so the same body twice is an ordinary input.
    target.endpoint("batch")
    if not items.has_ids:
        pytest.skip("items carry no id (items.id_field: null): a retry cannot name an item already stored")
    headers = {"Content-Type": envelope.content_type}
    retried: list[str] = []
    failures: list[str] = []
    for case in hostile.load_corpus():
        if case.raw_mode or case.expect not in ("clean", "clean-or-coerced", "processed", "4xx-or-processed"):
            continue
        built = hostile.build(case, items, envelope, profile.get("limits.max_bytes"))
        if not built.hostile:
            continue
        try:
            first = target.call("batch", content=built.content, headers=headers,
                                note=f"ROB-02 hostile case {case.name}: first send")
        except httpx.HTTPError:
            continue  # the first answer is the other check's to judge
        if not is_2xx(first) or json_of(first) is None:
            continue
        by_id = envelope.result_map(first, built.items)
        accepted = [h["id"] for h in built.hostile if getattr(by_id.get(h["id"]), "ok", None) is True]
        if not accepted:
            continue
        retried.append(case.name)
        try:
            again = target.call("batch", content=built.content, headers=headers,
                                note=f"ROB-02 hostile case {case.name}: the same body again (a retry)")
        except httpx.TimeoutException:
            failures.append(f"{case.name}: the retry got no answer within the timeout (a hang)")
            break
        except httpx.TransportError as exc:
            failures.append(f"{case.name}: the retry's connection was dropped ({type(exc).__name__})")
            continue
        if again.status_code >= 500:
            failures.append(f"{case.name}: the retry was answered {again.status_code}: {short(again.text, 160)}")
        elif is_2xx(again):
            if json_of(again) is None:
                failures.append(f"{case.name}: the retry was answered {again.status_code} with a body that is not JSON")
                continue
            again_by_id = envelope.result_map(again, built.items)
            lost = [short(i, 80) for i in accepted if getattr(again_by_id.get(i), "ok", None) is None]
            if lost:
                failures.append(f"{case.name}: the retry's answer has no ok or error result for {lost}")
        elif not 400 <= again.status_code < 500:
            failures.append(f"{case.name}: the retry was answered {again.status_code}, expected a 2xx or a 4xx")
        if target.stopped_answering:
            break
    figures.update(retried=retried, failed=len(failures))
    if not retried:
        observed("no hostile item was accepted (ok): none could be sent again")
    expect(not failures, f"{len(failures)} hostile body(ies) accepted once not answered cleanly when sent again",
           expected="a 4xx, or a 2xx with a result for each hostile item; never 5xx or a hang", seen=failures)


# A lying Content-Length costs the target's own body timeout (3 s on the reference server): waiting
# time, not work. Held beside the other checks when the preflight saw the target answer another
# request while one body was stalled; on a target that serves one request at a time, alone.
@pytest.mark.concurrent(seconds=3, holds_a_stalled_body=True)
@pytest.mark.rule("ROB-02", clause="a body shorter than its Content-Length (the rest never comes, the "
                  "connection stays open) gets a 4xx or a close within the timeout, never a hang or a 5xx")
def test_body_shorter_than_its_length_is_not_awaited_for_ever(target, items, envelope, profile, figures):
    """ROB-02 MUST: hostile inputs get a 4xx, never a 5xx or a hang: deep nesting, huge numbers, NaN/Infinity, invalid UTF-8, null items, wrong types, very long strings, non-ASCII ids."""
    target.endpoint("batch")
    cases = [case for case in hostile.load_corpus() if case.raw_mode == "lying_length"]
    if not cases:
        pytest.skip("the hostile corpus has no lying-length case")
    if target.in_process:
        pytest.skip("a lying Content-Length needs a real socket (the run is in-process)")
    failures = []
    for case in cases:
        problem = _run_case(case, target, items, envelope, profile)
        if problem:
            failures.append(f"{case.name} ({case.expect}): {problem}")
    figures.update(cases=[case.name for case in cases], failed=len(failures),
                   waited_s=[ex.elapsed_ms and round(ex.elapsed_ms / 1000, 3) for ex in target.evidence])
    expect(not failures,
           f"{len(failures)} body(ies) shorter than their Content-Length not answered cleanly: "
           + ", ".join(f.split(" ", 1)[0] for f in failures),
           expected="a 4xx or a close within target.timeout (conformance/corpus/hostile.yaml)", seen=failures)


# Normal batches sent after the hostile run: a pool of workers or connections in which the run broke one
# fails only the requests that draw it (one in three for a pool of three, served in turn).
RECOVERY_BATCHES = 6


@pytest.mark.rule("ROB-03", clause="after the hostile run normal batches (six, one after the other) are each "
                  "processed ok and read back")
def test_normal_batch_succeeds_after_hostile_run(target, items, envelope, profile):
    """ROB-03 MUST: after the hostile run, a normal batch still succeeds."""
    target.endpoint("batch")
    # The hostile run again (answers ignored: ROB-02 judges them), so that this check stands alone.
    quick = min(2.0, target.timeout)
    for case in hostile.load_corpus():
        if case.raw_mode and (target.in_process or case.raw_mode == "lying_length"):
            continue  # a lying length only costs the target's idle timeout; ROB-02 judged it
        try:
            problem = _run_case(case, target, items, envelope, profile, timeout=quick)
        except Exception:  # noqa: BLE001 - a hostile exchange may fail any way; only what follows counts
            problem = None
        if problem and "a hang" in problem:
            break
    # Several normal batches, one after the other: a server draws a worker or a database connection from
    # a pool for each request, and a hostile input that broke one of them (a transaction left open on a
    # pooled connection) fails only the requests that draw it; the first batch after the run may well
    # land on a healthy one.
    sent: list[Any] = []
    for k in range(RECOVERY_BATCHES):
        batch = items.valid(3)
        what = f"normal batch {k + 1} of {RECOVERY_BATCHES}"
        resp = target.batch(batch, note=f"ROB-03 {what} after the hostile run")
        expect(is_2xx(resp) and resp.status_code != 207,
               f"a normal batch of valid items failed after the hostile run ({what})",
               expected="2xx", seen=f"{resp.status_code}: {short(resp.text, 200)}")
        by_id = envelope.result_map(resp, batch)
        not_ok = [items.id_of(i) for i in batch if getattr(by_id.get(items.id_of(i)), "ok", None) is not True]
        expect(not not_ok, f"after the hostile run, valid items of a normal batch did not get ok results ({what})",
               expected="every item ok", seen={i: short(getattr(by_id.get(i), "raw", None), 160) for i in not_ok})
        sent.extend(batch)
    if profile.has("endpoints.read"):
        unread = [items.id_of(i) for i in sent if not target.exists(items.id_of(i))]
        expect(not unread, "after the hostile run, items of normal batches got ok results but cannot be read back",
               expected="every item readable", seen=unread)
