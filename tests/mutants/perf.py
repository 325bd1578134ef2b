"""Mutants of class PERF: batch endpoints that are "just a wrapper" around the single endpoint.

Both answer a correct batch response (one result per item, ids echoed, summary), so every CORE rule
holds; only the cost per item gives them away. Envelopes they do not handle (atomic, dependencies,
duplicates, limits, malformed bodies) go to the real batch endpoint unchanged.

Not a mutant here: a loop that hands each item straight to the app's single route (raw ASGI, no
HTTP client). In-process its item costs 0.25-0.45 of the kit's single request (the kit's request
also crosses threads), so it is caught, but too close to the limit of 0.2 on a loaded 2-core box to
be a reliable kill.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

import anyio
import httpx

from reference_server._body import BODY_IDLE_TIMEOUT_S

from ._base import PASS_THROUGH_BYTES, Scope, _prepend, mutant

SINGLE_PATH = "/orders"
ORDER_FIELDS = {"id", "amount", "currency", "note", "parent_id"}
SendOne = Callable[[Scope, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


def _plain_items(doc: Any) -> list[dict[str, Any]] | None:
    """The items of a plain non-atomic batch the wrapper can fan out, else None (the real endpoint answers)."""
    if not isinstance(doc, dict) or set(doc) != {"operations"}:
        return None
    ops = doc["operations"]
    if not isinstance(ops, list) or not 0 < len(ops) <= 1000:
        return None
    if not all(isinstance(it, dict) and isinstance(it.get("id"), str) and set(it) <= ORDER_FIELDS for it in ops):
        return None
    if len({it["id"] for it in ops}) != len(ops):
        return None
    return ops


def _result(item_id: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if 200 <= status < 300:
        return {"id": item_id, "status": "ok", "data": doc}
    err = {"code": doc.get("error", f"http_{status}"), "message": doc.get("message", "")}
    if "field" in doc:
        err["field"] = doc["field"]
    err["retryable"] = False
    return {"id": item_id, "status": "error", "error": err}


class PerItemWrapper:
    """POST /orders/batch answered by sending every item, one after the other, to the single endpoint."""

    def __init__(self, app: Any, send_one: SendOne) -> None:
        self.app = app
        self.send_one = send_one
        self.router = getattr(app, "router", None)  # the in-process transport runs the app's lifespan

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/orders/batch":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if HANDED_OVER & set(headers):  # keys and async preferences: the real endpoint's business
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more and len(body) <= PASS_THROUGH_BYTES:
            msg = None
            with anyio.move_on_after(BODY_IDLE_TIMEOUT_S / 2):  # a stalled body: the real endpoint times it out
                msg = await receive()
            if msg is None:
                break
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = bool(msg.get("more_body"))
        try:
            ops = None if more else _plain_items(json.loads(body, parse_constant=_no_constant))
        except (ValueError, RecursionError):  # not strict JSON: the real endpoint refuses it
            ops = None
        if ops is None:  # over the byte limit (streamed on), or an envelope the wrapper does not handle
            await self.app(scope, _prepend(body, more, receive), send)
            return
        results = []
        for item in ops:
            status, out = await self.send_one(scope, headers, json.dumps(item).encode())
            results.append(_result(item["id"], status, out))
        ok = sum(1 for r in results if r["status"] == "ok")
        payload = json.dumps({"results": results, "summary": {"total": len(results), "succeeded": ok,
                                                              "failed": len(results) - ok}}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


# Requests the wrapper hands to the real batch endpoint whole: it implements no idempotency keys
# (IDEM), no `Prefer: respond-async` (ASYNC-13); a wrapper in front of a real service leaves them there.
HANDED_OVER = {"idempotency-key", "prefer"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@mutant("PERF-01", "the batch endpoint calls the service's own HTTP API once per item through an in-process "
        "HTTP client", classes=["PERF"], check="test_batch_is_not_just_a_wrapper")
def batch_calls_own_api_per_item(app):
    clients: list[httpx.AsyncClient] = []

    async def through_client(scope: Scope, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if not clients:
            clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service"))
        fwd = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
        resp = await clients[0].post(SINGLE_PATH, content=body, headers=fwd)
        return resp.status_code, resp.content

    return PerItemWrapper(app, through_client)


@mutant("PERF-01", "the batch endpoint is a gateway fan-out: one HTTP request per item to the single "
        "endpoint over loopback", classes=["PERF"], socket=True, check="test_batch_is_not_just_a_wrapper",
        # 1000 items (SIZE-02's full batch) are 1000 loopback requests: slow, not wrong.
        profile={"target": {"timeout": 60}})
def batch_fans_out_http_requests(app):
    clients: dict[str, httpx.AsyncClient] = {}

    async def over_http(scope: Scope, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        host, port = scope["server"]
        base = f"http://{host}:{port}"
        client = clients.get(base)
        if client is None:  # one keep-alive client, as a gateway would hold
            client = clients[base] = httpx.AsyncClient(base_url=base, timeout=10)
        fwd = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
        resp = await client.post(SINGLE_PATH, content=body, headers=fwd)
        return resp.status_code, resp.content

    return PerItemWrapper(app, over_http)
