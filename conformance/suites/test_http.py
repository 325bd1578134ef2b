"""HTTP — status codes. SPEC §4."""
from __future__ import annotations

import json
from typing import Any, Callable

import httpx
import pytest

from conformance.checks import (Envelope, expect, json_of, mixed_batch, observed, pointer_set, response_json,
                                short)


def _is_2xx_not_207(status: int) -> bool:
    return 200 <= status < 300 and status != 207


def _raw(target, body: bytes, content_type: str, note: str):
    """POST a raw body to the batch endpoint (its declared method, path, query and headers)."""
    return target.call("batch", content=body, headers={"Content-Type": content_type}, note=note)


def _all_invalid(items) -> list[dict[str, Any]]:
    return [b.item for b in items.invalid(max(3, len(items.profile.get("items.invalid") or [])))]


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-01", clause="a batch with mixed outcomes gets a 2xx other than 207")
def test_mixed_batch_gets_2xx(target, items):
    """HTTP-01 MUST: a batch with mixed outcomes returns a 2xx status (never 4xx, 5xx or 207)."""
    mixed = mixed_batch(items, 3, 2)
    resp = target.batch(mixed.items)
    expect(_is_2xx_not_207(resp.status_code), "a batch with mixed outcomes did not get a 2xx",
           expected="2xx other than 207", seen=f"{resp.status_code}: {short(resp.text, 300)}")
    if not items.has_ids:
        return  # items carry no id: none can already exist
    # A failure found only at write time (a unique-key clash) is a per-item outcome too: valid items beside an
    # item whose id the batch above created. Failed (already exists) or upserted, the batch gets a 2xx.
    existing = next(it for it in mixed.items if items.id_of(it) == mixed.valid_ids[0])
    fresh = items.valid(2)
    again = [fresh[0], existing, fresh[1]]
    resp = target.batch(again, note=f"HTTP-01: valid items and one whose id already exists ({mixed.valid_ids[0]!r})")
    expect(_is_2xx_not_207(resp.status_code),
           "a batch of valid items and one whose id already exists (a failure found at write time) did not get a 2xx",
           expected="2xx other than 207, whatever the existing item's outcome",
           seen=f"{resp.status_code}: {short(resp.text, 300)}")


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-02", clause="no batch response is 207: all-valid, mixed and all-invalid batches, valid "
                  "items beside one whose id already exists, a failed atomic batch, a refused (malformed) body, "
                  "and an accepted async job")
def test_no_batch_response_is_207(target, items, profile):
    """HTTP-02 MUST NOT: any batch response uses 207 Multi-Status."""
    batches = {"all valid": items.valid(3), "mixed": mixed_batch(items, 2, 2).items, "all invalid": _all_invalid(items)}
    seen = {}
    for name, batch in batches.items():
        seen[name] = target.batch(batch).status_code
    if items.has_ids:
        # A failure found only at write time (an id the all-valid batch above created) is another kind of outcome
        # than a validation error: servers that answer 207 when per-item outcomes differ in kind do it here.
        fresh = items.valid(2)
        existing = batches["all valid"][0]
        seen["valid items and one whose id already exists"] = target.batch(
            [fresh[0], existing, fresh[1]],
            note=f"HTTP-02: valid items and one whose id already exists ({items.id_of(existing)!r})").status_code
    else:
        observed("no batch with an id that already exists was sent: the items carry no id")
    if profile.has("endpoints.atomic"):
        seen["atomic, one invalid item"] = target.atomic(mixed_batch(items, 2, 1).items).status_code
    # Answers that are not a 200: a refusal (a body that is not JSON) and an accepted async job.
    seen["malformed body (a refusal)"] = target.request(
        target.endpoint("batch").get("method", "POST"), target.url_for("batch"), content=b'{"not json',
        headers={"Content-Type": target.envelope.content_type}, note="a malformed body: refused, never 207").status_code
    if profile.has("endpoints.async"):
        seen["async job (accepted)"] = target.batch(mixed_batch(items, 2, 1).items, endpoint="async",
                                                    note="an async job: 202, never 207").status_code
    bad = {k: v for k, v in seen.items() if v == 207}
    expect(not bad, "a batch response used 207 Multi-Status", expected="no 207", seen=seen)


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-03", clause="a batch of invalid items only gets a 2xx with an error result "
                  "for every item")
def test_all_invalid_batch_gets_2xx_with_item_errors(target, items, envelope):
    """HTTP-03 MUST: a batch in which every item fails validation returns a 2xx with per-item errors (non-atomic endpoints)."""
    # Several invalid items, then a lone one: a one-item batch must not take a single-item code path.
    for what, batch in (("a batch whose items all fail validation", _all_invalid(items)),
                        ("a one-item batch whose item fails validation", [items.invalid(1)[0].item])):
        ids = [items.id_of(it) for it in batch]
        resp = target.batch(batch, note=f"HTTP-03: {what}")
        expect(_is_2xx_not_207(resp.status_code), f"{what} did not get a 2xx",
               expected="2xx with per-item errors", seen=f"{resp.status_code}: {short(resp.text, 300)}")
        by_id = envelope.result_map(response_json(resp), batch)
        not_errors = {i: (by_id[i].status if i in by_id else "no result") for i in ids
                      if i not in by_id or by_id[i].ok is not False}
        expect(not not_errors, f"the 2xx does not carry an error result for every invalid item ({what})",
               expected="an error result per item", seen=not_errors)


def _items_pointer(envelope: Envelope) -> str:
    return envelope.request_items


def _malformed_cases(envelope: Envelope, items) -> dict[str, bytes]:
    valid = json.dumps(envelope.body(items.valid(2))).encode()
    cases = {
        "malformed JSON (truncated)": valid[: max(1, len(valid) - 3)],
        "malformed JSON (trailing comma)": b'{"a": 1,}' if _items_pointer(envelope) else b"[1,]",
        "a string body": b'"operations"',
        "a number body": b"42",
        "a null body": b"null",
    }
    pointer = _items_pointer(envelope)
    if pointer:  # the envelope is an object: an array is a non-object body, and the items field can be wrong
        cases["an array body"] = json.dumps(items.valid(1)).encode()
        # The profile's fixed request fields (a queue URL) stay, so only the items are wrong.
        fixed = envelope.request_fields
        cases["no items field"] = json.dumps(fixed).encode()
        for label, value in (("a string", "items"), ("an object", {"0": items.valid(1)[0]}), ("a number", 3),
                             ("null", None), ("a boolean", True)):
            doc: dict[str, Any] = json.loads(json.dumps(fixed))
            pointer_set(doc, pointer, value)
            cases[f"the items field is {label}"] = json.dumps(doc).encode()
    return cases


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-04", clause="bodies that are not a batch (truncated JSON, trailing comma, "
                  "scalars, null, a wrong items member) get exactly 400 with a "
                  "JSON error")
def test_unparseable_batches_get_400_json(target, items, envelope):
    """HTTP-04 MUST: malformed JSON, a non-object body, or a missing/non-array items field gets 400 with a JSON error body, never 5xx."""
    wrong = {}
    for label, body in _malformed_cases(envelope, items).items():
        resp = _raw(target, body, envelope.content_type, note=f"HTTP-04: {label}")
        if resp.status_code != 400:
            wrong[label] = f"{resp.status_code}: {short(resp.text, 120)}"
        elif not isinstance(json_of(resp), (dict, list)) or not (envelope.error_codes(resp) or envelope.error_message(resp)):
            wrong[label] = f"400 without a JSON error body: {short(resp.text, 120)}"
    expect(not wrong, "a body that is not a batch did not get 400 with a JSON error body",
           expected="400 with a JSON error (code or message)", seen=wrong)


def _shape(resp) -> str:
    """How to name an error body that `envelope.error_shape` does not recognise."""
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    doc = json_of(resp)
    if not isinstance(doc, dict):
        return f"not a JSON object ({ctype or 'no Content-Type'})"
    return "unrecognised: keys " + ",".join(sorted(doc))


def _provocations(target, items, envelope, profile) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {
        "malformed JSON": lambda: _raw(target, b'{"x": [', envelope.content_type, "malformed JSON"),
        "empty batch": lambda: target.batch([]),
        "duplicate ids": lambda: target.batch(_duplicated(items)),
        "wrong content type": lambda: _raw(target, json.dumps(envelope.body(items.valid(1))).encode(),
                                           "text/plain", "text/plain body"),
    }
    # A wrong items member (a string): refused by a request-model validator, often with its own body shape.
    pointer = envelope.request_items
    if pointer:
        doc: dict[str, Any] = envelope.request_fields  # the profile's fixed fields stay: only the items are wrong
        pointer_set(doc, pointer, "x")
        out["items member not an array"] = lambda: _raw(target, json.dumps(doc).encode(), envelope.content_type,
                                                        "HTTP-05: the items member is a string")
    else:  # a bare-array envelope: an object is the body that is not a batch
        out["an object body"] = lambda: _raw(target, b'{"x": 1}', envelope.content_type, "HTTP-05: an object body")
    limit = profile.get("limits.max_items")
    if isinstance(limit, int) and limit <= 20000:
        out["too many items"] = lambda: target.batch(items.valid(limit + 1), note="max_items + 1 items")
    max_bytes = profile.get("limits.max_bytes")
    if isinstance(max_bytes, int) and max_bytes <= 16 * 1024 * 1024:
        # One body just over the byte limit: a size guard in front of the app often answers in its own shape.
        out["over the byte limit"] = lambda: _raw(target, _over_bytes(envelope, items, max_bytes),
                                                  envelope.content_type, f"HTTP-05: a body over {max_bytes} bytes")
    elif isinstance(max_bytes, int):
        observed(f"the byte-limit error was not provoked: limits.max_bytes ({max_bytes}) is over the 16 MiB the "
                 "check sends")
    return out


def _over_bytes(envelope: Envelope, items, max_bytes: int) -> bytes:
    """A batch of one valid item padded (ASCII: bytes and characters agree) to 1 KiB over `max_bytes`."""
    batch = items.valid(1)
    doc = envelope.body(batch)
    holder = doc if isinstance(doc, dict) else batch[0]
    holder["batchspec_padding"] = ""
    size = len(json.dumps(doc).encode())
    holder["batchspec_padding"] = "x" * max(0, max_bytes + 1024 - size)
    return json.dumps(doc).encode()


def _duplicated(items) -> list[dict[str, Any]]:
    a, b = items.valid(2)
    b = dict(b)
    items.set_id(b, items.id_of(a))
    return [a, b]


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-05", clause="the batch-level 4xx errors (malformed, a wrong items member, empty, "
                  "duplicates, wrong media type, over the item and byte limits) share one recognised body "
                  "shape")
def test_batch_level_errors_share_one_shape(target, items, envelope, profile):
    """HTTP-05 SHOULD: batch-level errors share one error body shape (code + message, or problem+json)."""
    shapes: dict[str, str] = {}
    labels: dict[str, str] = {}
    for label, send in _provocations(target, items, envelope, profile).items():
        try:
            resp = send()
        except httpx.TransportError as exc:
            # Over a socket a size guard may answer early and close while the big body is still being sent.
            observed(f"{label}: no answer was read ({type(exc).__name__}), its body shape was not observed")
            continue
        if 400 <= resp.status_code < 500:  # others (e.g. an empty batch answered 200) are not errors
            shapes[label] = envelope.error_shape(resp) or _shape(resp)
            labels[label] = envelope.media_label(resp) or "no Content-Type"
    if len(shapes) < 2:
        pytest.skip(f"fewer than two batch-level errors could be provoked ({sorted(shapes) or 'none'})")
    kinds = set(shapes.values())
    bad = {k: v for k, v in shapes.items() if v.startswith(("unrecognised", "not a JSON"))}
    expect(not bad, "a batch-level error body has neither a code and message nor the problem+json shape",
           expected="{error, message} or problem+json", seen=bad)
    expect(len(kinds) == 1, "batch-level errors use different body shapes", expected="one shape", seen=shapes)
    # The rule is about the body: the same problem body labelled application/json in one place and
    # application/problem+json in another is one shape (SPEC §2 names the problem body, not its label). Clients
    # that dispatch on the media type see a difference, so the PASS says so.
    if len(set(labels.values())) > 1:
        observed(f"one body shape ({next(iter(kinds))}) under different media types: {labels}")


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-06", clause="a valid batch labelled text/plain, form-urlencoded, application/xml or "
                  "application/octet-stream gets 415")
# The CORS-safelisted types and two that are not: a guard that refuses only the safelisted ones (a CSRF guard,
# not a media-type check) parses any other label as JSON.
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "application/octet-stream"])
def test_non_json_content_type_gets_415(target, items, envelope, content_type):
    """HTTP-06 SHOULD: a non-JSON Content-Type gets 415."""
    body = json.dumps(envelope.body(items.valid(1))).encode()
    resp = _raw(target, body, content_type, note=f"a JSON batch labelled {content_type}")
    expect(resp.status_code == 415, f"a batch sent as {content_type} did not get 415",
           expected="415 Unsupported Media Type", seen=f"{resp.status_code}: {short(resp.text, 200)}")


@pytest.mark.concurrent
@pytest.mark.rule("HTTP-07", clause="a processed batch (all-valid, mixed, all-invalid; a committed all-valid "
                  "atomic batch) answered 2xx is answered exactly 200")
def test_processed_batches_answer_200(target, items, profile):
    """HTTP-07 SHOULD: every processed batch answers exactly 200, the standard for batches."""
    seen = {"all valid": target.batch(items.valid(2)).status_code,
            "mixed": target.batch(mixed_batch(items, 2, 2).items).status_code,
            "all invalid": target.batch(_all_invalid(items)).status_code}
    if profile.has("endpoints.atomic"):
        # A committed atomic batch is processed too (a transaction that created everything is no reason for 201).
        seen["atomic, all valid"] = target.atomic(items.valid(2), note="HTTP-07: an all-valid atomic batch").status_code
    processed = {k: v for k, v in seen.items() if 200 <= v < 300}
    if not processed:
        pytest.skip(f"no batch was processed (statuses {seen}); HTTP-01/HTTP-03 report that")
    other = {k: v for k, v in processed.items() if v != 200}
    expect(not other, "a processed batch answered a 2xx other than 200", expected="200", seen=seen)
