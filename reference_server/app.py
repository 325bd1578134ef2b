"""Routes of the reference server and ``create_app``.

Clients: ``Authorization: Bearer <token>`` names a client (any token; a real deployment would put
its own authentication here); a request without one belongs to the one anonymous client. Orders
are scoped per client.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.routing import Route

from . import errors as E
from ._body import read_body
from .batch import BatchRequest, apply_batch, now_iso, parse_batch, parse_json
from .errors import ApiError, JSONResponse
from .idempotency import IdempotencyStore, Stored, batch_key, json_response
from . import jobs
from .openapi import build_openapi
from .settings import Settings
from .storage import Storage, open_storage
from .validation import ItemValidator

ANONYMOUS = ""


class _OrderIdConvertor(PathConvertor):
    """Any id, control characters included: the stock ``path`` regex (``.*``) stops at a newline."""

    regex = r"[\s\S]*"


register_url_convertor("order_id", _OrderIdConvertor())


def client_of(request: Request) -> str:
    """The client a request belongs to: its bearer token, or the anonymous client."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "bearer:" + token.strip()
    return ANONYMOUS


def require_json(request: Request) -> None:
    """415 for a declared Content-Type that is not JSON (none at all is read as JSON)."""
    ctype = request.headers.get("content-type")
    if ctype is None:
        return
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise ApiError(415, E.UNSUPPORTED_MEDIA_TYPE,
                   f"Content-Type must be application/json, not {media or 'empty'}")


class Service:
    """What the routes need: settings, storage and the compiled validators."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self.validator = ItemValidator()
        self.openapi = build_openapi(settings)
        self.idempotency = IdempotencyStore(storage, settings)

    async def body(self, request: Request) -> bytes:
        require_json(request)
        return await read_body(request, self.settings.max_bytes)

    def run_batch(self, client: str, batch: BatchRequest) -> dict[str, Any]:
        with self.storage.transaction() as conn:
            return self.apply(conn, client, batch).body()

    def apply(self, conn: Any, client: str, batch: BatchRequest) -> Any:
        """Apply a batch (honouring item keys) inside the open transaction ``conn``."""
        return self.idempotency.apply_items_once(conn, client, batch.items, self.validator.check_item,
                                                 atomic=batch.atomic)

    def batch_response(self, conn: Any, client: str, batch: BatchRequest) -> Stored:
        body = self.apply(conn, client, batch).body()
        return json_response(422 if body.get("status") == "failed" else 200, body)

    def run_single(self, client: str, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.storage.transaction() as conn:
            return self.single(conn, client, order)

    def single(self, conn: Any, client: str, order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        outcome = apply_batch(conn, client, [order], self.validator.check_order, created_at=now_iso())
        result = outcome.results[0]
        if result["status"] == "ok":
            return 201, result["data"]
        err = result["error"]
        # A conflict with the stored state (the id is taken, the parent is missing) is 409; an invalid order 422.
        status = 409 if err["code"] in (E.ALREADY_EXISTS, E.PARENT_NOT_FOUND) else 422
        body = {"error": err["code"], "message": err["message"]}
        if "field" in err:
            body["field"] = err["field"]
        return status, body


def _fingerprint(service: Service, key: str | None, path: str, doc: Any) -> str:
    """The request's fingerprint, computed only when a batch key will store it: without a key the
    canonical serialisation of a 1,000-item body would be work nobody reads."""
    return "" if key is None else service.idempotency.fingerprint("POST", path, doc)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def create_order(request: Request) -> Response:
    service = _service(request)
    key = batch_key(request.headers)
    doc = parse_json(await service.body(request))
    if not isinstance(doc, dict):
        raise ApiError(400, E.INVALID_BODY, "request body must be a JSON object (an order)")
    err = service.validator.check_order(doc)
    if err is not None:
        body = {"error": err["code"], "message": err["message"]}
        if "field" in err:
            body["field"] = err["field"]
        return JSONResponse(body, status_code=422)
    client, path = client_of(request), request.url.path

    def respond(conn: Any) -> Stored:
        status, body = service.single(conn, client, doc)
        headers = {"Location": "/orders/" + quote(doc["id"], safe="")} if status == 201 else None
        return json_response(status, body, headers)

    def work() -> Stored:
        # The single endpoint honours the batch key header too (same store, same semantics).
        return service.idempotency.once(client, key, _fingerprint(service, key, path, doc), respond)

    return (await to_thread.run_sync(work)).response()


async def read_order(request: Request) -> Response:
    service = _service(request)
    order_id = request.path_params["order_id"]
    storage = service.storage
    if storage.inline_reads:
        order = storage.get_order(client_of(request), order_id)
    else:
        order = await to_thread.run_sync(storage.get_order, client_of(request), order_id)
    if order is None:
        raise ApiError(404, E.NOT_FOUND, f"no order with id '{order_id}'")
    return JSONResponse(order)


async def batch_orders(request: Request) -> Response:
    service = _service(request)
    key = batch_key(request.headers, required=service.settings.idempotency_key_required)
    body = await service.body(request)
    client, path = client_of(request), request.url.path
    if jobs.prefers_async(request):  # RFC 7240 `Prefer: respond-async`: the batch becomes an async job
        return await jobs.create_job(request, client, body, prefer=True)

    def work() -> Stored:
        batch = parse_batch(body, service.settings)
        # Refused batches (malformed, too large) raise before the key is claimed: nothing is stored.
        return service.idempotency.once(client, key, _fingerprint(service, key, path, batch.raw),
                                        lambda conn: service.batch_response(conn, client, batch))

    return (await to_thread.run_sync(work)).response()


async def openapi(request: Request) -> Response:
    return JSONResponse(_service(request).openapi)


ROUTES = [
    Route("/orders", create_order, methods=["POST"]),
    Route("/orders/batch", batch_orders, methods=["POST"]),
    Route("/orders/{order_id:order_id}", read_order, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    *jobs.routes(client_of),
]


def create_app(db_path: str | None = None, *, settings: Settings | None = None) -> Starlette:
    """The reference server as an ASGI app.

    ``db_path``: a SQLite file, ``None`` for a fresh temporary SQLite file, or a ``postgresql://``
    URL (every app created on the same PostgreSQL database is an instance of one service)."""
    settings = settings or Settings()
    tmpdir: str | None = None
    if db_path is None:
        tmpdir = tempfile.mkdtemp(prefix="batchspec-ref-")
        db_path = os.path.join(tmpdir, "orders.db")
    storage = open_storage(db_path, busy_timeout_ms=settings.busy_timeout_ms)
    service = Service(storage, settings)
    runner = jobs.JobRunner(jobs.JobStore(storage, settings, service.apply), settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Background workers (async import jobs, their callbacks) run while the app serves.
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()
        storage.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ApiError: E.api_error_handler,
            HTTPException: E.http_exception_handler,
            Exception: E.internal_error_handler,
        },
    )
    app.state.service = service
    app.state.settings = settings
    app.state.jobs = runner
    app.state.db_path = db_path
    weakref.finalize(app, storage.close)
    if tmpdir is not None:
        weakref.finalize(app, shutil.rmtree, tmpdir, True)
    return app
