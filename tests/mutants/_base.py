"""Building blocks for mutants: ASGI wrappers that break one rule of a working server.

A mutant is a function `app -> app`. Most rewrite a JSON request or response on one route; a few
patch behaviour deeper. Each is registered with the rule it breaks, so the kill matrix can prove
the kit notices.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]


@dataclass
class Mutant:
    name: str
    rule: str
    description: str
    build: Callable[[Any], Any]
    classes: list[str] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # rules the mutant necessarily breaks too
    profile: dict[str, Any] = field(default_factory=dict)  # profile overrides (deep-merged)
    socket: bool = False  # needs a real socket (chunked bodies, dropped connections)
    variation: bool = False  # a LEGAL variation: no MUST may fail
    level: str | None = None  # the mutant breaks a weaker clause of its rule (checks marked `level`)
    check: str | None = None  # the check (test function name) that must FAIL (or WARN) to count as caught: docs/coverage.md
    warns: list[str] = field(default_factory=list)  # variations: SHOULD rules the variation may make WARN
    # Rules whose checks cannot be set up against this mutant (it breaks a step they rely on, such as
    # the 202's job id): SPEC §5 makes a setup failure an ERROR. At least one must be an ERROR.
    errors: list[str] = field(default_factory=list)
    # Rules the mutant breaks only when a check happens to observe it (a result that vanishes at
    # completion breaks ASYNC-05's monotonicity only if a poll saw it finished before): a FAIL there
    # is true, its absence is not a stale exemption. Keep this list for such timing-bound cases.
    may_also: list[str] = field(default_factory=list)


REGISTRY: list[Mutant] = []


def mutant(rule: str, description: str, *, classes: list[str] | None = None, also: list[str] | None = None,
           profile: dict[str, Any] | None = None, socket: bool = False, level: str | None = None,
           check: str | None = None, errors: list[str] | None = None,
           may_also: list[str] | None = None) -> Callable:
    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        REGISTRY.append(Mutant(fn.__name__, rule.upper(), description, fn, classes or [], also or [],
                               profile or {}, socket, level=level, check=check, errors=errors or [],
                               may_also=may_also or []))
        return fn
    return deco


def variation(description: str, *, classes: list[str] | None = None, profile: dict[str, Any] | None = None,
              warns: list[str] | None = None) -> Callable:
    """A legal variation: no MUST may fail, and only the SHOULD rules in `warns` may WARN."""
    def deco(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        REGISTRY.append(Mutant(fn.__name__, "", description, fn, classes or [], [], profile or {}, False, True,
                               warns=[w.upper() for w in warns or []]))
        return fn
    return deco


@dataclass
class Call:
    """One intercepted request/response, as plain data the rewrite functions change.

    `state` is what a mutant's request hook remembers for its response hook (whether the request
    asked for the atomic mode, its items, how many it sent...): a `Rewrite` hands the same `Call` to
    both hooks of one exchange, and every exchange gets a fresh `Call`, so nothing is kept on the
    server. The kit runs independent checks concurrently: another check's request may come between
    this request and its response, and must not see (or overwrite) what this one asked for. A
    request the hook never saw (a body over PASS_THROUGH_BYTES is streamed on untouched) leaves it
    empty."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_body: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, RecursionError):  # hostile bodies (ROB-02) nest 10,000 deep
            return None

    def response_json(self) -> Any:
        try:
            return json.loads(self.response_body) if self.response_body else None
        except (ValueError, RecursionError):  # hostile bodies (ROB-02) nest 10,000 deep
            return None

    def set_response_json(self, doc: Any, status: int | None = None) -> None:
        self.response_body = json.dumps(doc).encode()
        if status is not None:
            self.status = status

    def set_json(self, doc: Any) -> None:
        self.body = json.dumps(doc).encode()

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def set_response_header(self, name: str, value: str | None) -> None:
        key = name.lower().encode()
        self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != key]
        if value is not None:
            self.response_headers.append((key, value.encode()))


RequestHook = Callable[[Call], Awaitable[None] | None]
ResponseHook = Callable[[Call], Awaitable[None] | None]


def matches(method: str | None, path: str | Callable[[str], bool] | None) -> Callable[[str, str], bool]:
    def match(m: str, p: str) -> bool:
        if method and m.upper() != method.upper():
            return False
        if path is None:
            return True
        return path(p) if callable(path) else p == path
    return match


class Rewrite:
    """Buffers a matching exchange, lets hooks rewrite the request and/or the response."""

    def __init__(self, app: Any, *, method: str | None = "POST", path: Any = "/orders/batch",
                 request: RequestHook | None = None, response: ResponseHook | None = None):
        self.app = app
        self.match = matches(method, path)
        self.on_request = request
        self.on_response = response
        # Keep the wrapped app's lifespan reachable for the in-process transport.
        self.router = getattr(app, "router", None)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.match(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = bool(msg.get("more_body"))
            if len(body) > PASS_THROUGH_BYTES:
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call(scope["method"], scope["path"], scope.get("query_string", b"").decode(), dict(headers), body)
        if len(body) > PASS_THROUGH_BYTES:
            # Over the reference server's byte limit: streamed on untouched (the app refuses it
            # while it streams, SIZE-03); only the response is rewritten.
            await self._respond(scope, _prepend(body, more, receive), send, call)
            return
        if self.on_request:
            res = self.on_request(call)
            if hasattr(res, "__await__"):
                await res
        new_headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        new_headers.append((b"content-length", str(len(call.body)).encode()))
        for k, v in call.headers.items():
            if k not in headers or headers[k] != v:
                new_headers = [(hk, hv) for hk, hv in new_headers if hk.decode("latin-1").lower() != k]
                new_headers.append((k.encode("latin-1"), v.encode("latin-1")))
        scope = dict(scope, headers=new_headers)
        await self._respond(scope, _prepend(call.body, False, receive), send, call)

    async def _respond(self, scope: Scope, replay: Any, send: Any, call: Call) -> None:
        parts: list[bytes] = []

        async def capture(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                call.status = msg["status"]
                call.response_headers = list(msg.get("headers", []))
            elif msg["type"] == "http.response.body":
                parts.append(msg.get("body", b""))

        await self.app(scope, replay, capture)
        call.response_body = b"".join(parts)
        if self.on_response:
            res = self.on_response(call)
            if hasattr(res, "__await__"):
                await res
        hdrs = [(k, v) for k, v in call.response_headers if k.lower() != b"content-length"]
        hdrs.append((b"content-length", str(len(call.response_body)).encode()))
        await send({"type": "http.response.start", "status": call.status, "headers": hdrs})
        await send({"type": "http.response.body", "body": call.response_body})


# The reference server's default byte limit (Settings.max_bytes): a larger body is never buffered
# nor rewritten by a mutant, so the server's own streamed 413 (SIZE-03) is what the kit sees.
PASS_THROUGH_BYTES = 1_048_576


async def read_body(receive: Any) -> bytes:
    """An ASGI request's whole body (the messages joined until the last)."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


def _prepend(first: bytes, more: bool, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI receive that yields `first`, then (if `more`) the rest of the original stream."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": first, "more_body": more}
        if more:
            return await receive()
        return {"type": "http.disconnect"}
    return replay


def on_batch_response(fn: Callable[[Call], None], path: str = "/orders/batch", method: str = "POST"):
    """Wrap: rewrite the batch endpoint's response."""
    return lambda app: Rewrite(app, method=method, path=path, response=fn)


def on_batch_request(fn: Callable[[Call], None], path: str = "/orders/batch", method: str = "POST"):
    return lambda app: Rewrite(app, method=method, path=path, request=fn)


# -- what a variation changes, its OpenAPI document says too ------------------------------------
# A legal variation stands for a real server that behaves so and documents it: ROB-01 judges every
# response against the target's own document, so a variation that changes a response shape must
# change the document the same way (or ROB-01 rightly flags the difference).

def on_openapi(fn: Callable[[dict], None], path: str = "/openapi.json"):
    """Wrap: rewrite the OpenAPI document in place (`fn(doc)`)."""
    def hook(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict):
            fn(doc)
            call.set_response_json(doc)
    return lambda app: Rewrite(app, method="GET", path=path, response=hook)


def document_problem_json(doc: dict, paths: Callable[[str], bool] = lambda p: True) -> None:
    """Every 4xx response of the matching paths may also be application/problem+json (same schema)."""
    for path, ops in doc.get("paths", {}).items():
        if not paths(path):
            continue
        for op in ops.values():
            for status, resp in (op.get("responses") or {}).items() if isinstance(op, dict) else ():
                content = resp.get("content") or {}
                if str(status).startswith("4") and "application/json" in content:
                    content.setdefault("application/problem+json", content["application/json"])


def client_of(call: "Call") -> str:
    """The client a request belongs to, as the reference server keys its rows (`app.client_of`): for
    mutants that touch the store directly."""
    scheme, _, token = (call.header("authorization") or "").partition(" ")
    return "bearer:" + token.strip() if scheme.lower() == "bearer" and token.strip() else ""
