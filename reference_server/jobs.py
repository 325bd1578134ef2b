"""Async import jobs: ``POST /imports/batch`` (202), ``GET``/``DELETE /imports/batch/{job_id}``.

A job is stored (its items as one immutable JSON array) before the 202 is sent. A worker task,
started in the app's lifespan and woken by an event on creation, applies the job in chunks: each
chunk goes through ``apply_batch`` (the sync endpoint's transactional batch code) and its orders,
its per-item results and the job's progress are committed in ONE transaction. A process killed
mid-chunk therefore rolls the whole chunk back, and the next start (any process on the same
database) resumes from the last committed position: every item is applied exactly once.

Several processes may share the database (``--workers N``, or instances on one PostgreSQL
database): each chunk transaction re-reads the job's position under ``BEGIN IMMEDIATE`` (SQLite)
or with the job row locked ``FOR UPDATE SKIP LOCKED`` (PostgreSQL: a job busy on one instance is
left to it), so two workers never apply the same chunk; an instance that dies mid-chunk ends its
session, which rolls the chunk back and frees the row for the next free worker (docs/fleet.md).

Callbacks (``callback_url``): when a job ends, one POST of its final status is sent by a separate
task (never the worker), retried with exponential backoff. SSRF caveat: the reference server is a
test target and posts to any http(s) URL a client names; a real deployment must restrict callback
hosts (no private, loopback or link-local addresses) and sign the payload.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors as E
from .batch import BatchOutcome, BatchRequest, now_iso, parse_batch
from .errors import ApiError, JSONResponse
from .idempotency import Stored, batch_key, fingerprint, json_response
from .settings import Settings
from .storage import PgConnection, Storage

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "queued", "running", "completed", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (COMPLETED, FAILED, CANCELLED)

JOB_NOT_FOUND = "job_not_found"
JOB_FINISHED = "job_already_finished"
RETRY_AFTER = "1"  # seconds; delay-seconds is an integer (RFC 9110 §10.2.3)
PAGE_SIZE = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id                TEXT PRIMARY KEY,
    client            TEXT NOT NULL,
    status            TEXT NOT NULL,
    atomic            INTEGER NOT NULL DEFAULT 0,
    total             INTEGER NOT NULL,
    processed         INTEGER NOT NULL DEFAULT 0,   -- items [0, processed) have their result
    succeeded         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    items             BLOB NOT NULL,                -- the operations array, as received (JSON)
    callback_url      TEXT,
    callback_state    TEXT,                         -- NULL, 'due', 'delivered', 'abandoned'
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_next_at  REAL NOT NULL DEFAULT 0,
    turn              REAL NOT NULL,                -- least recently served active job goes first
    created_at        TEXT NOT NULL,
    created_ts        REAL NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT,
    finished_ts       REAL
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (turn) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (callback_next_at) WHERE callback_state = 'due';
CREATE TABLE IF NOT EXISTS job_results (
    job_id   TEXT NOT NULL,
    position INTEGER NOT NULL,
    result   BLOB NOT NULL,
    PRIMARY KEY (job_id, position)
) WITHOUT ROWID;
"""

# The sync endpoint's batch code (``Service.apply``: apply_batch honouring item keys), in a transaction.
Apply = Callable[[sqlite3.Connection, str, BatchRequest], BatchOutcome]

_COLUMNS = ("id, client, status, total, processed, succeeded, failed, callback_url, created_at, "
            "updated_at, finished_at")


def status_url(job_id: str) -> str:
    return "/imports/batch/" + quote(job_id, safe="")


def prefers_async(request: Request) -> bool:
    """Whether the request carries ``Prefer: respond-async`` (RFC 7240; tokens are case-insensitive)."""
    for value in request.headers.getlist("prefer"):
        for pref in value.split(","):
            if pref.split(";", 1)[0].split("=", 1)[0].strip().lower() == "respond-async":
                return True
    return False


def callback_of(doc: dict[str, Any]) -> str | None:
    """The job's ``callback_url``: only absolute http(s) URLs with a host (see the SSRF caveat above)."""
    url = doc.get("callback_url")
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, E.INVALID_BODY, "'callback_url' must be an absolute http(s) URL", field="callback_url")
    return str(url)


class JobStore:
    """The jobs of one SQLite database: create, read, cancel, apply the next chunk."""

    def __init__(self, storage: Storage, settings: Settings, apply: Apply) -> None:
        self.storage = storage
        self.settings = settings
        self.apply = apply
        self.chunk_items = settings.async_chunk_items
        # Parsed items of the jobs this process is working on (items are immutable once stored).
        self._items: dict[str, list[dict[str, Any]]] = {}
        # Whether a job's items depend on each other, decided once per job, not at every chunk.
        self._linked: dict[str, bool] = {}
        storage.executescript(_SCHEMA)

    # -- creation -------------------------------------------------------------
    def insert(self, conn: sqlite3.Connection, client: str, batch: BatchRequest,
               callback_url: str | None) -> dict[str, Any]:
        """Store a new queued job inside the caller's transaction (the idempotency claim's)."""
        now, stamp = time.time(), now_iso()
        job_id = "job_" + uuid.uuid4().hex
        conn.execute(
            "INSERT INTO jobs (id, client, status, atomic, total, items, callback_url, turn, created_at, "
            "created_ts, updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, client, int(batch.atomic), len(batch.items), orjson.dumps(batch.items), callback_url,
             now, stamp, now, stamp))
        self._items[job_id] = batch.items  # harmless if the transaction rolls back: nobody asks for it
        return {"job_id": job_id, "status": QUEUED, "total": len(batch.items)}

    # -- reading ----------------------------------------------------------------
    def load(self, client: str, job_id: str, cursor: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any] | None:
        """The job resource (one page of results from ``cursor``) as ``client`` sees it, or ``None``.

        Counts and results come from one read snapshot, so they always agree."""
        with self.storage.snapshot() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND client = ?",
                               (job_id, client)).fetchone()
            if row is None:
                return None
            job = _row(row)
            end = min(cursor + limit, job["processed"])
            results = [orjson.loads(r[0]) for r in conn.execute(
                "SELECT result FROM job_results WHERE job_id = ? AND position >= ? AND position < ? "
                "ORDER BY position", (job_id, cursor, end))]
        return resource(job, results, next_cursor=str(end) if end < job["processed"] else None)

    def cancel(self, client: str, job_id: str) -> dict[str, Any] | None:
        """Cancel an active job: the chunks already committed stay, no later chunk runs."""
        with self.storage.transaction() as conn:
            # FOR UPDATE (PostgreSQL): wait for a chunk running on any instance, then decide on its outcome.
            row = conn.execute("SELECT status FROM jobs WHERE id = ? AND client = ?" + self.storage.for_update,
                               (job_id, client)).fetchone()
            if row is None:
                return None
            if row[0] in TERMINAL:
                raise ApiError(409, JOB_FINISHED, f"job '{job_id}' already ended ({row[0]}); nothing to cancel",
                               job_status=row[0])
            stamp = now_iso()
            conn.execute("UPDATE jobs SET status = 'cancelled', updated_at = ?, finished_at = ?, finished_ts = ?, "
                         "callback_state = CASE WHEN callback_url IS NULL THEN NULL ELSE 'due' END "
                         "WHERE id = ?", (stamp, stamp, time.time(), job_id))
        self._items.pop(job_id, None)
        self._linked.pop(job_id, None)
        return self.load(client, job_id)

    # -- processing ---------------------------------------------------------------
    def step(self) -> tuple[str, str] | None:
        """Apply the next chunk of the least recently served active job: ``(job_id, status)``, or ``None``.

        The chunk's orders, its results and the job's progress commit together or not at all."""
        with self.storage.reading() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE status IN ('queued', 'running') LIMIT 1").fetchone() is None:
                return None
        with self.storage.transaction() as conn:
            # SKIP LOCKED (PostgreSQL): a job whose chunk another instance is applying is left to it;
            # the row lock lasts as long as the chunk's transaction, so an instance that dies
            # mid-chunk rolls it back and frees the job for the next free worker (the takeover).
            row = conn.execute("SELECT id, client, atomic, total, processed FROM jobs "
                               "WHERE status IN ('queued', 'running') ORDER BY turn LIMIT 1"
                               + self.storage.skip_locked).fetchone()
            if row is None:
                return None
            job_id, client, atomic, total, processed = row
            items = self._items_of(conn, job_id)
            size = self.chunk_items
            linked = self._linked.get(job_id)
            if linked is None:
                linked = self._linked[job_id] = any("depends_on" in item for item in items)
            if atomic or linked:
                size = total  # all-or-nothing and cross-item dependencies need the whole job in one batch
            chunk = items[processed:processed + size]
            outcome = self.apply(conn, client, BatchRequest(items=chunk, atomic=bool(atomic)))
            rows = [(job_id, processed + k, orjson.dumps(r)) for k, r in enumerate(outcome.results)]
            if isinstance(conn, PgConnection):  # one COPY stream rather than a statement per result
                conn.copy("job_results", ("job_id", "position", "result"), rows)
            else:
                conn.executemany("INSERT INTO job_results (job_id, position, result) VALUES (?, ?, ?)", rows)
            done = processed + len(chunk) >= total
            status = (FAILED if atomic and not outcome.applied else COMPLETED) if done else RUNNING
            stamp, now = now_iso(), time.time()
            conn.execute(
                "UPDATE jobs SET status = ?, processed = ?, succeeded = succeeded + ?, failed = failed + ?, "
                "turn = ?, updated_at = ?, finished_at = CASE WHEN ? THEN ? END, "
                "finished_ts = CASE WHEN ? THEN ? END, "
                "callback_state = CASE WHEN ? AND callback_url IS NOT NULL THEN 'due' END WHERE id = ?",
                (status, processed + len(chunk), outcome.succeeded, outcome.failed, now, stamp,
                 done, stamp, done, now, done, job_id))
        if done:
            self._items.pop(job_id, None)
            self._linked.pop(job_id, None)
        return job_id, status

    def _items_of(self, conn: sqlite3.Connection, job_id: str) -> list[dict[str, Any]]:
        items = self._items.get(job_id)
        if items is None:  # a job created by another process, or before a restart
            items = orjson.loads(conn.execute("SELECT items FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
            self._items[job_id] = items
        return items

    def purge_expired(self) -> int:
        """Drop jobs that ended more than the retention window ago."""
        cutoff = time.time() - self.settings.async_retention_seconds
        with self.storage.transaction() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE finished_ts < ?", (cutoff,))]
            for job_id in ids:
                conn.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return len(ids)

    # -- callbacks ------------------------------------------------------------------
    def claim_callback(self, lease_seconds: float) -> tuple[str, str, dict[str, Any], int] | None:
        """Take one due callback for ``lease_seconds`` (a process that dies while sending loses the lease)."""
        now = time.time()
        with self.storage.transaction() as conn:
            row = conn.execute("SELECT id, client, callback_attempts FROM jobs WHERE callback_state = 'due' "
                               "AND callback_next_at <= ? ORDER BY callback_next_at LIMIT 1" + self.storage.skip_locked,
                               (now,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE jobs SET callback_next_at = ?, callback_attempts = callback_attempts + 1 "
                         "WHERE id = ?", (now + lease_seconds, row[0]))
        job = self.load(row[1], row[0], limit=0)
        if job is None:
            return None
        with self.storage.reading() as conn:
            url = conn.execute("SELECT callback_url FROM jobs WHERE id = ?", (row[0],)).fetchone()[0]
        job.pop("results", None)
        job.pop("next_cursor", None)
        return row[0], url, job, row[2] + 1

    def callback_done(self, job_id: str, delivered: bool, attempts: int, max_attempts: int, backoff: float) -> None:
        with self.storage.transaction() as conn:
            if delivered:
                conn.execute("UPDATE jobs SET callback_state = 'delivered' WHERE id = ?", (job_id,))
            elif attempts >= max_attempts:
                conn.execute("UPDATE jobs SET callback_state = 'abandoned' WHERE id = ?", (job_id,))
            else:
                conn.execute("UPDATE jobs SET callback_next_at = ? WHERE id = ?", (time.time() + backoff, job_id))

    def next_callback_at(self) -> float | None:
        with self.storage.reading() as conn:
            row = conn.execute("SELECT MIN(callback_next_at) FROM jobs WHERE callback_state = 'due'").fetchone()
        return row[0] if row else None


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    job = dict(zip(keys, row))
    job["job_id"] = job.pop("id")
    return job


def resource(job: dict[str, Any], results: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    """The wire shape of a job (``schemas/job.schema.json#/$defs/job``)."""
    done = job["succeeded"] + job["failed"]
    body: dict[str, Any] = {
        "job_id": job["job_id"],
        "status": job["status"],
        "total": job["total"],
        "succeeded": job["succeeded"],
        "failed": job["failed"],
        "pending": job["total"] - done,
        "results": results,
        "next_cursor": next_cursor,
        "status_url": status_url(job["job_id"]),
        "created_at": job["created_at"],
        "updated_at": job["updated_at"],
    }
    if job.get("finished_at"):
        body["finished_at"] = job["finished_at"]
    return body


class JobRunner:
    """The background side: one worker task applying chunks, one task delivering callbacks."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.chunk_pause = 0.0  # seconds between chunks (0: none); slows a job down for tests
        self.idle_poll = 1.0  # seconds: jobs created by another process sharing the database
        self.callback_timeout = 5.0
        self.callback_max_attempts = settings.async_callback_max_attempts
        self.callback_backoff = settings.async_callback_backoff
        self._wake: asyncio.Event | None = None
        self._callbacks_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._posting: set[asyncio.Task[None]] = set()  # callback deliveries waiting on the network
        self._sending: set[asyncio.Task[None]] = set()
        self._stopping = False

    def notify(self) -> None:
        """A job was created or changed: the worker picks it up now instead of at its next idle poll."""
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._callbacks_wake = asyncio.Event()
        self._tasks = [asyncio.create_task(self._work(), name="batchspec-jobs"),
                       asyncio.create_task(self._deliver(), name="batchspec-callbacks")]

    async def stop(self) -> None:
        """Let the tasks finish what they are doing, then end them.

        Never cancel a task while it waits on a database call in a worker thread: the call would go
        on after the storage is closed (SQLite crashes on a connection closed under it). Only the
        network part of a callback delivery is cancelled; it is retried after the next start."""
        self._stopping = True
        for event in (self._wake, self._callbacks_wake):
            if event is not None:
                event.set()
        for task in list(self._posting):
            task.cancel()
        for task in [*self._tasks, *self._sending]:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: PERF203 - shutting down
                pass
        self._tasks = []

    async def _work(self) -> None:
        assert self._wake is not None
        last_purge = 0.0
        while not self._stopping:
            self._wake.clear()  # before the step: a job created during it wakes the next round
            try:
                stepped = await to_thread.run_sync(self.store.step)
            except self.store.storage.Busy:  # locked by another process for too long, or the database
                # connection was lost: try again later
                stepped = None
            if stepped is not None:
                if stepped[1] in TERMINAL and self._callbacks_wake is not None:
                    self._callbacks_wake.set()
                await asyncio.sleep(self.chunk_pause)  # also lets request handlers in between chunks
                continue
            if self._stopping:
                break
            if time.monotonic() - last_purge > 60:
                last_purge = time.monotonic()
                await to_thread.run_sync(self.store.purge_expired)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll)
            except asyncio.TimeoutError:
                pass

    async def _deliver(self) -> None:
        assert self._callbacks_wake is not None
        # The HTTP client is made when the first callback is due, not at start-up: making one loads
        # the CA bundle for its TLS context (~40 ms of CPU), which a server whose jobs have no
        # callback never needs (the kit's embedded run starts one; issue 18, round 12).
        client: Any = None
        try:
            while not self._stopping:
                self._callbacks_wake.clear()
                claim = await to_thread.run_sync(self.store.claim_callback, self.callback_timeout * 3)
                if claim is not None and not self._stopping:
                    if client is None:
                        import httpx

                        client = httpx.AsyncClient(timeout=self.callback_timeout, follow_redirects=False)
                    task = asyncio.create_task(self._send(client, *claim))
                    self._sending.add(task)
                    task.add_done_callback(self._sending.discard)
                    continue
                if self._stopping:
                    break
                due = await to_thread.run_sync(self.store.next_callback_at)
                wait = self.idle_poll if due is None else min(self.idle_poll, max(0.01, due - time.time()))
                try:
                    await asyncio.wait_for(self._callbacks_wake.wait(), timeout=wait)
                except asyncio.TimeoutError:
                    pass
        finally:
            if client is not None:
                await client.aclose()

    async def _send(self, client: Any, job_id: str, url: str, job: dict[str, Any], attempt: int) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._posting.add(me)
        try:
            resp = await client.post(url, content=orjson.dumps(job),
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "batchspec-reference-server"})
            delivered = 200 <= resp.status_code < 300
        except Exception:  # unreachable, timed out, refused: retried with backoff
            delivered = False
        finally:
            self._posting.discard(me)
        backoff = min(60.0, self.callback_backoff * 2 ** (attempt - 1))
        await to_thread.run_sync(self.store.callback_done, job_id, delivered, attempt,
                                 self.callback_max_attempts, backoff)
        if not delivered and self._callbacks_wake is not None:
            self._callbacks_wake.set()


# -- routes ----------------------------------------------------------------------------------------

async def create_job(request: Request, client: str, body: bytes, *, prefer: bool = False) -> Response:
    """Validate the envelope, store the job (under the batch idempotency key), wake the worker, answer 202."""
    service = request.app.state.service
    jobs: JobRunner = request.app.state.jobs
    settings: Settings = service.settings
    key = batch_key(request.headers)
    path = request.url.path

    def accept(conn: sqlite3.Connection, batch: BatchRequest, callback_url: str | None) -> Stored:
        job = jobs.store.insert(conn, client, batch, callback_url)
        url = status_url(job["job_id"])
        headers = {"Location": url, "Retry-After": RETRY_AFTER}
        if prefer:
            headers["Preference-Applied"] = "respond-async"
        return json_response(202, {"job_id": job["job_id"], "status_url": url, "status": job["status"],
                                   "total": job["total"]}, headers)

    def work() -> Stored:
        batch = parse_batch(body, settings, max_items=settings.async_max_items)
        callback_url = callback_of(batch.raw)
        service.idempotency.keyed_items(batch.items)  # an item key twice in the job: 400 before it is stored
        # A retry with the same key and body replays this 202: the same job, never a second one.
        return service.idempotency.once(client, key, fingerprint("POST", path, batch.raw),
                                        lambda conn: accept(conn, batch, callback_url))

    stored = await to_thread.run_sync(work)
    jobs.notify()
    return stored.response()


MAX_CURSOR = 2**63 - 1


def routes(client_of: Callable[[Request], str]) -> list[Route]:
    """The job routes; ``client_of`` names the client of a request (the app's authentication seam)."""

    async def submit(request: Request) -> Response:
        body = await request.app.state.service.body(request)
        return await create_job(request, client_of(request), body)

    def _cursor(request: Request) -> tuple[int, int]:
        try:
            cursor = int(request.query_params.get("cursor", "0"))
            limit = int(request.query_params.get("limit", str(PAGE_SIZE)))
        except ValueError:
            raise ApiError(400, "invalid_cursor", "cursor and limit must be non-negative integers") from None
        # A cursor past any row (SQLite integers are 64-bit) is as wrong as a negative one: 400, never
        # an OverflowError turned 500 (schemathesis sends 32-digit numbers).
        if not 0 <= cursor <= MAX_CURSOR or not 0 <= limit <= PAGE_SIZE:
            raise ApiError(400, "invalid_cursor", f"cursor must be 0..{MAX_CURSOR} and limit 0..{PAGE_SIZE}")
        return cursor, limit

    def _not_found(job_id: str) -> ApiError:
        return ApiError(404, JOB_NOT_FOUND, f"no job with id '{job_id}'")

    async def status(request: Request) -> Response:
        jobs: JobRunner = request.app.state.jobs
        job_id = request.path_params["job_id"]
        cursor, limit = _cursor(request)
        job = await to_thread.run_sync(jobs.store.load, client_of(request), job_id, cursor, limit)
        if job is None:
            raise _not_found(job_id)
        headers = {} if job["status"] in TERMINAL else {"Retry-After": RETRY_AFTER}
        return JSONResponse(job, headers=headers)

    async def cancel(request: Request) -> Response:
        jobs: JobRunner = request.app.state.jobs
        job_id = request.path_params["job_id"]
        job = await to_thread.run_sync(jobs.store.cancel, client_of(request), job_id)
        if job is None:
            raise _not_found(job_id)
        return JSONResponse(job)

    async def job(request: Request) -> Response:
        # One route per path, so a method it does not take gets 405 with an Allow naming every method
        # of the path (two routes on one path let the first answer Allow: GET, HEAD alone).
        return await (cancel if request.method == "DELETE" else status)(request)

    return [
        Route("/imports/batch", submit, methods=["POST"]),
        Route("/imports/batch/{job_id}", job, methods=["GET", "DELETE"]),
    ]
