"""In-process transport: the kit talks to an ASGI app without sockets (the kit's own tests).

httpx's ASGITransport is async-only; the checks are synchronous. This transport runs the app on an
event loop in one background thread (with its lifespan, so background workers start) and hands
each request over to it.
"""
from __future__ import annotations

import contextlib
from typing import Any

import anyio
import anyio.from_thread
import httpx


class ASGIThreadTransport(httpx.BaseTransport):
    def __init__(self, app: Any, *, lifespan: bool = True, client: tuple[str, int] = ("127.0.0.1", 50000)):
        self.app = app
        # An exception in the app is a 500, as a server would answer: a crash is a finding of the
        # rule whose request caused it, never an ERROR of the kit.
        self._inner = httpx.ASGITransport(app=app, client=client, raise_app_exceptions=False)
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        if lifespan:
            ctx = getattr(getattr(app, "router", None), "lifespan_context", None)
            if ctx is not None:
                self._stack.enter_context(self._portal.wrap_async_context_manager(ctx(app)))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        timeout = (request.extensions.get("timeout") or {}).get("read")

        async def run() -> httpx.Response:
            with anyio.fail_after(timeout if timeout else None):
                return await exchange()

        async def exchange() -> httpx.Response:
            areq = httpx.Request(request.method, request.url, headers=request.headers, content=body,
                                 extensions=request.extensions)
            resp = await self._inner.handle_async_request(areq)
            # The bytes as sent (still gzip'ed where the app compressed them): the client decodes
            # them once, by the headers passed on. aread() would decode here too, and the client
            # would then fail decoding plain bytes (a gzip-ing target ERRORed every rule in-process).
            content = b"".join([chunk async for chunk in resp.aiter_raw()])
            return httpx.Response(resp.status_code, headers=resp.headers, content=content,
                                  extensions=resp.extensions, request=request)

        try:
            return self._portal.call(run)
        except TimeoutError:
            raise httpx.ReadTimeout("in-process target did not answer in time", request=request) from None

    def close(self) -> None:
        self._stack.close()
