"""FLEET mutants: two instances of the reference server in one process, declared as one service.

`Fleet` routes a request by its Host: `http://instance-2.test` (the profile's `target.instances`)
reaches the second instance, anything else (the base URL) the first; it starts every instance's
lifespan, so the kill matrix runs it in-process like any other mutant, without PostgreSQL. The
instances share one SQLite file where the mutant says so (as real instances share PostgreSQL); each
mutant breaks one thing a load balancer exposes.
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import AsyncExitStack, asynccontextmanager
from types import SimpleNamespace
from typing import Any

from ._base import Call, Rewrite, mutant, read_body, variation

INSTANCE_2 = "http://instance-2.test"
PROFILE = {"target": {"instances": [INSTANCE_2]}}


class Fleet:
    """Several ASGI apps behind one in-process "load balancer" that routes by Host."""

    def __init__(self, first: Any, second: Any, *, also_start: tuple[Any, ...] = ()) -> None:
        self.first, self.second = first, second
        self._apps = (first, second, *also_start)
        self.router = SimpleNamespace(lifespan_context=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, _app: Any) -> Any:
        async with AsyncExitStack() as stack:
            started: set[int] = set()
            for app in self._apps:
                router = getattr(app, "router", None)
                ctx = getattr(router, "lifespan_context", None)
                if ctx is not None and id(router) not in started:
                    started.add(id(router))
                    await stack.enter_async_context(ctx(app))
            yield

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        app = self.second if host.split(":")[0] == "instance-2.test" else self.first
        await app(scope, receive, send)


def _another(app: Any) -> Any:
    """A second instance on the same database as `app` (what instances sharing PostgreSQL are)."""
    from reference_server import create_app

    return create_app(app.state.db_path)


def _json(send: Any, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    body = json.dumps(doc).encode()

    async def go() -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *(headers or [])]})
        await send({"type": "http.response.body", "body": body})
    return go()


class LocalIdempotency:
    """Idempotency keys kept in this process's memory (what many servers do): a key is only known
    to the instance that saw it. The shared server below never sees the key."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.router = getattr(app, "router", None)
        self.done: dict[tuple[str, str], tuple[bytes, int, list, bytes]] = {}
        self.flight: set[tuple[str, str]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        key = headers.get(b"idempotency-key")
        keys = [v for n, v in scope.get("headers") or [] if n.lower() == b"idempotency-key"]
        if scope["type"] != "http" or scope["method"] != "POST" or not key or len(keys) > 1 or len(key) > 255:
            # No key, or a malformed one: the server validates it (IDEM-10) as usual.
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        k = (headers.get(b"authorization", b"").decode("latin-1"), key.decode("latin-1"))
        fp = scope["path"].encode() + b"\n" + body
        if k in self.done:
            stored_fp, status, hdrs, stored = self.done[k]
            if stored_fp != fp:
                await _json(send, 422, {"error": "idempotency_key_reused", "message": "key reused"})
                return
            await send({"type": "http.response.start", "status": status,
                        "headers": [*hdrs, (b"idempotent-replayed", b"true")]})
            await send({"type": "http.response.body", "body": stored})
            return
        if k in self.flight:
            await _json(send, 409, {"error": "idempotency_key_in_use", "message": "in flight"},
                        [(b"retry-after", b"1")])
            return
        self.flight.add(k)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: dict[str, Any] = {}
        parts: list[bytes] = []

        async def capture(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                parts.append(msg.get("body", b""))

        inner = dict(scope, headers=[(n, v) for n, v in scope["headers"] if n.lower() != b"idempotency-key"])
        try:
            await self.app(inner, replay, capture)
        finally:
            self.flight.discard(k)
        out = b"".join(parts)
        if start.get("status", 500) < 500:
            self.done[k] = (fp, start["status"], list(start.get("headers", [])), out)
        await send({"type": "http.response.start", "status": start.get("status", 500),
                    "headers": list(start.get("headers", []))})
        await send({"type": "http.response.body", "body": out})


@mutant("FLEET-02", "idempotency keys kept in each instance's memory: a retry on another instance is applied again",
        also=["FLEET-03"], profile=PROFILE, check="test_keyed_retry_on_another_instance_is_a_replay")
def idempotency_local_to_each_instance(app):
    return Fleet(LocalIdempotency(app), LocalIdempotency(_another(app)))


class _JobsElsewhere:
    """An instance whose job routes are served by its own job store (another database)."""

    def __init__(self, app: Any, jobs_app: Any) -> None:
        self.app, self.jobs_app = app, jobs_app
        self.router = getattr(app, "router", None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/imports/"):
            await self.jobs_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


@mutant("FLEET-04", "each instance keeps its own job store: a job submitted to one is unknown to the other",
        profile=PROFILE, check="test_job_is_visible_and_progresses_on_every_instance")
def job_store_local_to_each_instance(app):
    from reference_server import create_app

    own_jobs = create_app()  # its job table (and the orders its jobs write) on a database of its own
    return Fleet(app, _JobsElsewhere(_another(app), own_jobs), also_start=(own_jobs,))


@mutant("FLEET-01", "two instances on separate databases declared as one service",
        also=["FLEET-02", "FLEET-04"], profile=PROFILE,
        # Concurrent duplicates over two stores are each applied once in their own: FLEET-03 sees
        # it only when the two answers differ (FLEET-01 is the rule that catches the split).
        may_also=["FLEET-03"],
        check="test_applied_items_are_readable_on_every_instance")
def separate_databases(app):
    from reference_server import create_app

    return Fleet(app, create_app())


LAG_S = 1.5


@mutant("FLEET-01", f"reads on one instance lag {LAG_S:g}s behind the writes made on the other (an async replica)",
        # FLEET-03 reads back on the first instance that answered; whether that is the one that wrote
        # (no lag) or the other (404 within the lag) is a race of its concurrent duplicates: timing-bound.
        may_also=["FLEET-03"], profile=PROFILE, check="test_applied_items_are_readable_on_every_instance")
def reads_lag_behind_writes(app):
    written: dict[tuple[str, str], tuple[str, float]] = {}

    def instance(inner: Any, name: str) -> Any:
        def wrote(call: Call) -> None:
            doc = call.response_json()
            replayed = any(k.lower() == b"idempotent-replayed" for k, _ in call.response_headers)
            if 200 <= call.status < 300 and isinstance(doc, dict) and not replayed:  # a replay writes nothing
                client = call.header("authorization") or ""
                ok = [r["id"] for r in doc.get("results") or [] if isinstance(r, dict) and r.get("status") == "ok"]
                if call.path == "/orders" and isinstance(doc.get("id"), str):
                    ok = [doc["id"]]
                for item_id in ok:
                    written[(client, item_id)] = (name, time.monotonic())

        def lag(call: Call) -> None:
            item_id = call.path[len("/orders/"):]
            by = written.get((call.header("authorization") or "", item_id))
            if by and by[0] != name and time.monotonic() - by[1] < LAG_S and call.status == 200:
                call.status = 404
                call.set_response_json({"error": "not_found", "message": f"no order with id '{item_id}'"})

        writes = Rewrite(inner, method="POST", path=lambda p: p in ("/orders", "/orders/batch"), response=wrote)
        return Rewrite(writes, method="GET", path=lambda p: p.startswith("/orders/") and p != "/orders/batch",
                       response=lag)

    return Fleet(instance(app, "one"), instance(_another(app), "two"))


@variation("instances on one shared store answer with different Server headers and timings", profile=PROFILE)
def instances_differ_in_server_header_and_timing(app):
    def tagged(inner: Any, name: str, delay: float) -> Any:
        async def tag(call: Call) -> None:
            await asyncio.sleep(delay)
            call.set_response_header("server", name)
        return Rewrite(inner, method=None, path=None, response=tag)

    return Fleet(tagged(app, "edge-a/1.0", 0.0), tagged(_another(app), "edge-b/2.3 (canary)", 0.03))


class _CancelOnlyWhereRunning:
    """An instance that cancels only the jobs it runs itself: a DELETE of a job reaches no shared store."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.router = getattr(app, "router", None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "DELETE" and scope["path"].startswith("/imports/batch/"):
            job_id = scope["path"].rsplit("/", 1)[-1]
            await _json(send, 404, {"error": "job_not_found", "message": f"no job '{job_id}' runs on this instance"})
            return
        await self.app(scope, receive, send)


@mutant("FLEET-04", "a job can be cancelled only on the instance it was submitted to (the other answers 404)",
        profile=PROFILE, check="test_job_can_be_cancelled_from_another_instance")
def cancel_only_on_the_submitting_instance(app):
    return Fleet(app, _CancelOnlyWhereRunning(_another(app)))


@mutant("FLEET-03", "finished idempotency keys are shared, but each instance guards its in-flight keys alone: "
                    "duplicates arriving together on two instances are both applied",
        profile=PROFILE, check="test_concurrent_duplicates_over_instances_apply_once")
def in_flight_keys_local_to_each_instance(app):
    first, second = LocalIdempotency(app), LocalIdempotency(_another(app))
    second.done = first.done  # a retry after the end is a replay everywhere (FLEET-02 holds)
    return Fleet(first, second)


def _job_ids_made_per_instance(app: Any) -> Any:
    """The instance `app` names its jobs as a server with a local id generator does: the submission
    second and a sequence number it keeps for that second (`job_20261130123641_1`), with no part
    that tells the instances apart. The job row is saved with an upsert on its id, so a job that
    comes out with another instance's id replaces that job (its items and results)."""
    store = app.state.jobs.store
    insert = store.insert
    seq = {"second": "", "n": 0}

    def insert_numbered(conn: Any, client: str, batch: Any, callback_url: str | None) -> dict[str, Any]:
        job = insert(conn, client, batch, callback_url)
        second = time.strftime("%Y%m%d%H%M%S")
        seq["n"] = seq["n"] + 1 if seq["second"] == second else 1
        seq["second"] = second
        new = f"job_{second}_{seq['n']}"
        conn.execute("DELETE FROM job_results WHERE job_id = ?", (new,))  # the upsert: whatever had the id goes
        conn.execute("DELETE FROM jobs WHERE id = ?", (new,))
        conn.execute("UPDATE jobs SET id = ? WHERE id = ?", (new, job["job_id"]))
        store._items[new] = store._items.pop(job["job_id"])
        return dict(job, job_id=new)
    store.insert = insert_numbered
    return app


@mutant("FLEET-04", "each instance makes job ids on its own (the second it was submitted and a sequence it keeps, "
                    "no instance part) and saves jobs with an upsert: jobs submitted at once to two instances get "
                    "one id, and the later one replaces the other",
        profile=PROFILE, check="test_jobs_submitted_to_different_instances_stay_apart")
def job_ids_made_per_instance(app):
    return Fleet(_job_ids_made_per_instance(app), _job_ids_made_per_instance(_another(app)))
