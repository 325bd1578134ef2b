"""The kit's HTTP client through httpx.MockTransport: evidence, redaction, replay, redirects, Retry-After, cleanup."""
from __future__ import annotations

import json

import httpx
import pytest

from conformance import loads_profile
from conformance._client import Session, Target

PROFILE = """\
target:
  base_url: http://target.test/api
  headers: {Authorization: "Bearer ${TOKEN}", X-Api-Key: "${KEY}"}
  retry_after_max: 2
  max_retry_wait: 0.05
endpoints:
  batch: {path: /orders/batch}
  read: {method: GET, path: "/orders/{id}"}
  delete: {method: DELETE, path: "/orders/{id}"}
items:
  valid: [{amount: 1, currency: USD}]
"""
ENV = {"TOKEN": "tok-123456789", "KEY": "key-abcdefgh"}


def target_with(handler) -> tuple[Target, list]:
    session = Session(loads_profile(PROFILE, env=ENV), httpx.MockTransport(handler))
    evidence: list = []
    return Target(session, evidence), evidence


def test_evidence_is_recorded_and_redacted_with_a_replayable_curl():
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"results": [], "echo": req.headers["authorization"]})

    target, evidence = target_with(handler)
    resp = target.batch([{"id": "a", "amount": 1}])
    assert resp.status_code == 200
    (ex,) = evidence
    assert ex.method == "POST" and ex.url == "http://target.test/api/orders/batch"
    assert ex.request_headers["Authorization"] == "<redacted>"
    assert ex.request_headers["X-Api-Key"] == "<redacted>"
    blob = json.dumps(ex.to_dict())
    assert "tok-123456789" not in blob and "key-abcdefgh" not in blob
    assert "<redacted>" in ex.response_body  # a token echoed by the target is redacted too
    assert ex.curl.startswith("curl -sS -X POST http://target.test/api/orders/batch ")
    assert '"Authorization: $BATCHSPEC_AUTHORIZATION"' in ex.curl
    assert "--data-binary" in ex.curl and '"amount":1' in ex.curl


def test_redirect_to_another_host_is_not_followed():
    hosts = []

    def handler(req: httpx.Request) -> httpx.Response:
        hosts.append(req.url.host)
        return httpx.Response(307, headers={"location": "http://elsewhere.test/steal"})

    target, evidence = target_with(handler)
    resp = target.batch([])
    assert resp.status_code == 307
    assert hosts == ["target.test"]
    assert "redirect to another host not followed" in evidence[-1].note


def test_same_host_redirect_is_followed():
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/api/orders/batch":
            return httpx.Response(308, headers={"location": "/api/v2/orders/batch"})
        return httpx.Response(200, json={"results": []})

    target, evidence = target_with(handler)
    assert target.batch([]).status_code == 200
    assert [e.status for e in evidence] == [308, 200]


def test_redirect_keeps_the_query_of_its_location():
    """A same-host redirect is followed to its Location as given, query included (Azure-style
    `?api-version=` locations): the request's own query must not replace it."""
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        if req.url.path == "/api/jobs/1":
            return httpx.Response(303, headers={"location": "/api/jobs/1/result?view=final&cursor=10"})
        return httpx.Response(200, json={"results": []})

    target, _ = target_with(handler)
    assert target.request("GET", "http://target.test/api/jobs/1", params={"cursor": "10"}).status_code == 200
    assert seen == ["http://target.test/api/jobs/1?cursor=10",
                    "http://target.test/api/jobs/1/result?view=final&cursor=10"]


def test_params_are_added_to_the_query_a_url_already_has():
    """A URL the target handed out keeps its own query byte for byte (a signed status URL, an
    `?api-version=` path), and the kit's parameters (a results cursor, an endpoint's fixed query)
    come after it: httpx's `params=` alone would replace that query."""
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(200, json={"results": []})

    target, _ = target_with(handler)
    target.request("GET", "http://target.test/api/jobs/1?sig=a%2Fb&x=1", params=[("cursor", "10"), ("all", True)])
    target.request("GET", "http://target.test/api/jobs/1", params={"cursor": "10"})
    target.request("GET", "http://target.test/api/jobs/1?sig=abc", params=None)
    assert seen == ["http://target.test/api/jobs/1?sig=a%2Fb&x=1&cursor=10&all=true",
                    "http://target.test/api/jobs/1?cursor=10",
                    "http://target.test/api/jobs/1?sig=abc"]


@pytest.mark.parametrize("status, method, follows_with", [
    (303, "POST", "GET"), (303, "DELETE", "GET"), (302, "POST", "GET"), (301, "POST", "GET"),
    (307, "POST", "POST"), (308, "POST", "POST"), (302, "DELETE", "DELETE")])
def test_redirect_method_follows_rfc_9110(status, method, follows_with):
    """A cancel answered `303 See Other` to the job (RFC 9110 §15.4.4) is followed with GET and no
    body; re-sending the POST would ask the job's URL to cancel (a 405 on most APIs). 307/308 keep
    the method and the body."""
    seen: list[tuple[str, bytes, str | None]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((req.method, req.content, req.headers.get("content-type")))
        if req.url.path == "/api/jobs/1/cancel":
            return httpx.Response(status, headers={"location": "/api/jobs/1"})
        return httpx.Response(200, json={"status": "cancelled"})

    target, evidence = target_with(handler)
    assert target.request(method, "http://target.test/api/jobs/1/cancel", json_body={"x": 1}).status_code == 200
    assert seen[1][0] == follows_with
    if follows_with == "GET":
        assert seen[1][1] == b"" and seen[1][2] is None
        assert "followed with GET" in (evidence[0].note or "")
    else:
        assert seen[1][1] == seen[0][1]


@pytest.mark.parametrize("value, seconds", [
    ("0", 0.0), ("120", 120.0), (" 7 ", 7.0), ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
    ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0), ("Sun Nov  6 08:49:37 1994", 0.0),
    ("0.5", None), ("-1", None), ("1e3", None), ("inf", None), ("nan", None), ("+3", None), ("1_000", None),
    ("soon", None), ("", None)])
def test_retry_after_is_delay_seconds_or_an_http_date(value, seconds):
    """RFC 9110 §10.2.3: delay-seconds is `1*DIGIT`; anything else that is not an HTTP-date is invalid
    (ASYNC-06 judges the header with this, the kit's own waits honour only valid values)."""
    from conformance._client import retry_after_seconds

    assert retry_after_seconds(value) == seconds


def test_retry_after_is_honoured_a_bounded_number_of_times():
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, headers={"retry-after": "0"}, json={"error": "slow_down"})

    target, evidence = target_with(handler)
    assert target.batch([]).status_code == 429
    assert len(calls) == 3  # the first try and retry_after_max=2 retries
    assert all("Retry-After" in (e.note or "") for e in evidence[:2])


def test_transport_errors_are_evidence_too():
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    target, evidence = target_with(handler)
    try:
        target.batch([])
    except httpx.ConnectError:
        pass
    assert evidence[-1].status is None and "ConnectError" in evidence[-1].error


def test_batch_body_is_what_batch_sends_encoded_once():
    """IDEM-03 encodes its batch once and sends those bytes from every duplicate: they must be
    exactly what `batch` would send (the endpoint's fixed body members and headers, the envelope's
    Content-Type), and the evidence must hold them like any other request."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"results": []})

    profile = PROFILE.replace("batch: {path: /orders/batch}",
                              "batch: {path: /orders/batch, body: {QueueUrl: q1}, headers: {X-Fixed: f}}")
    session = Session(loads_profile(profile, env=ENV), httpx.MockTransport(handler))
    evidence: list = []
    target = Target(session, evidence)
    items = [{"id": "a", "amount": 1}, {"id": "b", "amount": 2}]
    target.batch(items, headers={"Idempotency-Key": "k1"})
    body = target.batch_body(items)
    target.batch(items, headers={"Idempotency-Key": "k1"}, body=body)
    target.batch(items, headers={"Idempotency-Key": "k1"}, body=body)
    first, *again = seen
    assert json.loads(body)["QueueUrl"] == "q1"
    for req in again:
        assert req.content == first.content == body
        assert req.headers["content-type"] == first.headers["content-type"]
        assert req.headers["x-fixed"] == "f" and req.headers["idempotency-key"] == "k1"
    assert [ex.request_body for ex in evidence[1:]] == [evidence[0].request_body] * 2
