"""Mutants of class ASYNC: async jobs (202, status resource, progress, cancel, Prefer, callbacks).

Response rewrites on the job routes, or patches of the reference server's job store and runner
(`app.state.jobs`). The ASYNC checks grow their jobs until one is seen running, so most mutants run on an
unslowed server; one (counts_go_back) still slows its small jobs down (`_slow`: small
chunks with a pause between them), as a loaded server would be, so the kit sees it in progress.
"""
from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import orjson
from anyio import to_thread

from ._base import Call, Rewrite, client_of, document_problem_json, mutant, on_openapi, variation

JOBS = "/imports/batch"


def _is_job(path: str) -> bool:
    return path.startswith(JOBS + "/")


def _slow(app: Any, chunk: int = 2, pause: float = 0.06, up_to: int = 100) -> None:
    """Jobs of at most `up_to` items run `chunk` items at a time; larger ones keep the server's chunks
    (the pause follows every chunk). The slowing is there to show a small job in progress: the
    2,500-item jobs of the paging checks (ASYNC-04, ASYNC-09) run 2 items at a time would outlast
    async.deadline_seconds, which no defect of the mutant causes."""
    runner = app.state.jobs
    store = runner.store
    step, normal = store.step, store.chunk_items
    runner.chunk_pause = pause

    def sized_step():
        # The job the step is about to take (the same query, run by the one worker thread just before).
        with store.storage.reading() as conn:
            row = conn.execute("SELECT total FROM jobs WHERE status IN ('queued', 'running') ORDER BY turn "
                               "LIMIT 1").fetchone()
        store.chunk_items = chunk if row is None or row[0] <= up_to else normal
        return step()
    store.step = sized_step


def _on_create(fn):
    return lambda app: Rewrite(app, method="POST", path=JOBS, response=fn)


def _on_status(fn, method: str = "GET"):
    return lambda app: Rewrite(app, method=method, path=_is_job, response=fn)


def _job(call: Call) -> dict | None:
    doc = call.response_json()
    return doc if call.status == 200 and isinstance(doc, dict) and "results" in doc else None


def _drop_request_header(app: Any, name: bytes, path: str = "/orders/batch"):
    async def strip(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == path:
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != name])
        await app(scope, receive, send)
    strip.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return strip


def _small_jobs_in_pages_of_three(app, inner):
    """`inner`, but a status read of a job of at most 50 items without a `limit` asks for pages of three
    (the grown jobs of ASYNC-03/04/05 keep the server's pages: paging them three at a time is slow)."""
    conn = app.state.jobs.store.storage.connection

    async def paged(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and _is_job(scope["path"]):
            row = conn().execute("SELECT total FROM jobs WHERE id = ?",
                                 (scope["path"][len(JOBS) + 1:].split("/")[0],)).fetchone()
            qs = scope.get("query_string", b"").decode()
            if row is not None and row[0] <= 50 and "limit=" not in qs:
                scope = dict(scope, query_string=(qs + ("&" if qs else "") + "limit=3").encode())
        await inner(scope, receive, send)
    paged.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return paged


# -- ASYNC-01 ----------------------------------------------------------------------------------------

@mutant("ASYNC-01", "the 202 names the job id but gives no status_url",
        may_also=["ROB-01"], also=[],
        check="test_async_batch_gets_202_with_job_id_and_status_url")
def no_status_url(app):
    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 202 and isinstance(doc, dict):
            doc.pop("status_url", None)
            call.set_response_json(doc)
    return _on_create(fn)(app)


@mutant("ASYNC-01", "the job is accepted with 200 instead of 202",
        may_also=["ROB-01"], also=[],
        check="test_async_batch_gets_202_with_job_id_and_status_url")
def accepted_as_200(app):
    def fn(call: Call) -> None:
        if call.status == 202:
            call.status = 200
    return _on_create(fn)(app)


@mutant("ASYNC-01", "the async endpoint validates every item before it accepts the job: a batch with an invalid item "
                   "is refused whole (422 with the item errors, no job), although a job reports per-item failures",
        check="test_async_batch_gets_202_with_job_id_and_status_url",
        # The checks that judge a mixed job (counts, results as they come, monotonic progress, retention)
        # cannot create one: a setup failure, an ERROR (which of them errs first depends on timing).
        errors=["ASYNC-02", "ASYNC-03", "ASYNC-04", "ASYNC-05", "ASYNC-12"])
def mixed_job_refused_whole(app):
    def check(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if not isinstance(ops, list):
            return
        bad = [op.get("id") for op in ops if isinstance(op, dict) and
               (not isinstance(op.get("amount"), (int, float)) or isinstance(op.get("amount"), bool)
                or op.get("amount") <= 0 or op.get("currency") not in ("USD", "EUR", "GBP"))]
        if bad:
            call.state["bad"] = bad
            call.set_json({"operations": "refused before a job is created"})  # the server refuses it: no job

    def answer(call: Call) -> None:
        bad = call.state.get("bad")
        if bad:
            call.set_response_json({"error": "invalid_items", "message": f"{len(bad)} invalid item(s): {bad[:5]}"},
                                   status=422)
    return Rewrite(app, method="POST", path=JOBS, request=check, response=answer)


@mutant("ASYNC-01", "the 202 has no Location header (the SHOULD clause)", level="SHOULD",
        check="test_202_carries_location_of_the_job")
def no_location(app):
    def fn(call: Call) -> None:
        call.set_response_header("location", None)
    return _on_create(fn)(app)


# -- ASYNC-02 ----------------------------------------------------------------------------------------

@mutant("ASYNC-02", "a finished job says 'done', a status outside the vocabulary",
        may_also=["ROB-01"], also=[],
        check="test_status_resource_reports_status_and_counts",
        # IDEM-05's async check waits for the second client's job, which ends with the unknown word too.
        errors=["ASYNC-03", "ASYNC-04", "ASYNC-05", "ASYNC-08", "ASYNC-09", "ASYNC-10", "ASYNC-12", "ASYNC-13",
                "IDEM-05"])
def status_word_done(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed":
            doc["status"] = "done"
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-02", "the pending count is never decremented (counts do not add up)",
        check="test_status_resource_reports_status_and_counts")
def pending_stuck_at_total(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc:
            doc["pending"] = doc["total"]
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-02", "results paged three at a time (legal) and every finished item counted as succeeded "
        "(failed always 0) although the results list error results",
        check="test_status_resource_reports_status_and_counts")
def failed_counted_as_succeeded_paged(app):
    # The counts still add up (succeeded + failed + pending = total): only the final counts against the
    # final results, read over several pages, show it.
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc:
            doc["succeeded"] += doc["failed"]
            doc["failed"] = 0
            call.set_response_json(doc)
    # Pages of three only for small jobs (ASYNC-02's): paging the grown jobs of ASYNC-03/05 three at a
    # time took the mutant ~55 s, and only the small job's final results are what it breaks.
    return _small_jobs_in_pages_of_three(app, _on_status(fn)(app))


# -- ASYNC-03 ----------------------------------------------------------------------------------------

@mutant("ASYNC-03", "a slow job lists no results until it has ended, although its counts rise",
        check="test_results_appear_as_known_in_sync_shape")
def results_withheld_until_done(app):

    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") in ("queued", "running"):
            doc["results"] = []
            doc["next_cursor"] = None
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-03", "a job service that publishes progress only when the job ends: while it runs the status says "
        "0 finished, all pending, and lists no results, although its items are applied (readable) chunk by chunk",
        check="test_results_appear_as_known_in_sync_shape")
def nothing_shown_until_the_end(app):
    # The counts add up (0 + 0 + total pending) and never go back, so only the read endpoint, asked
    # between two polls of the running job, shows results that are known and not listed.
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") in ("queued", "running"):
            doc.update(succeeded=0, failed=0, pending=doc["total"], results=[], next_cursor=None)
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-03", "job results carry a bare message string instead of the sync error object",
        check="test_results_appear_as_known_in_sync_shape")
def string_errors_in_job(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc:
            for r in doc["results"]:
                if isinstance(r.get("error"), dict):
                    r["error"] = r["error"].get("message", "invalid")
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-03", "ok results in the job carry no data", may_also=["ROB-01"], also=[],
        check="test_results_appear_as_known_in_sync_shape")
def job_ok_without_data(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc:
            for r in doc["results"]:
                r.pop("data", None)
            call.set_response_json(doc)
    return _on_status(fn)(app)


# -- ASYNC-04 ----------------------------------------------------------------------------------------

@mutant("ASYNC-04", "a finished job loses its last item's result", also=["ASYNC-02"], may_also=["ASYNC-05"],
        check="test_job_ends_with_one_result_per_item")
def loses_a_result(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed" and doc["results"]:
            doc["results"].pop()
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-04", "a finished job lists its first item's result twice", also=["ASYNC-02"],
        check="test_job_ends_with_one_result_per_item")
def duplicates_a_result(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed" and doc["results"]:
            doc["results"].append(dict(doc["results"][0]))
            call.set_response_json(doc)
    return _on_status(fn)(app)


@mutant("ASYNC-04", "the worker never marks a job completed: it stays running with nothing pending",
        profile={"async": {"deadline_seconds": 0.3}}, check="test_job_ends_with_one_result_per_item",
        # IDEM-05's async check waits for the second client's job to end (full matrix).
        errors=["ASYNC-05", "ASYNC-08", "ASYNC-09", "ASYNC-10", "ASYNC-12", "ASYNC-13", "IDEM-05"])
def never_completes(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed":
            doc["status"] = "running"
            call.set_response_json(doc)
            call.set_response_header("retry-after", "1")
    return _on_status(fn)(app)


@mutant("ASYNC-04", "a chunk's last write is lost while its result still says ok",
        # IDEM-05's async check reads the second client's job items back: its last one is lost too.
        also=["IDEM-05"],
        check="test_job_ends_with_one_result_per_item")
def ok_result_not_applied(app):
    store = app.state.jobs.store
    apply = store.apply

    def lossy(conn, client, batch):
        outcome = apply(conn, client, batch)
        ok = [r["id"] for r in outcome.results if r["status"] == "ok"]
        if ok:
            conn.execute("DELETE FROM orders WHERE client = ? AND id = ?", (client, ok[-1]))
        return outcome
    store.apply = lossy
    return app


@mutant("ASYNC-04", "the results cursor skips the first result of every page after the first (the page query "
        "reads past the cursor instead of from it)",
        # A grown job seen running past its first page shows finished items without their results.
        may_also=["ASYNC-03"],
        check="test_paged_job_ends_with_one_result_per_item")
def cursor_skips_page_start(app):
    store = app.state.jobs.store
    load = store.load

    def past_the_cursor(client, job_id, cursor=0, *args, **kw):
        # The first page (no cursor) is right, so a job that fits in one page never shows it.
        return load(client, job_id, cursor + 1 if cursor else cursor, *args, **kw)
    store.load = past_the_cursor
    return app


# -- ASYNC-05 ----------------------------------------------------------------------------------------

@mutant("ASYNC-05", "a finished job reads as running again after its first completed read (stale cache)",
        # ASYNC-04: a job whose results span pages is read page by page; once a page has shown it
        # completed, every later read says running, so the paged check's job never ends for a client
        # (a true "no terminal state"), depending on which read first saw it completed
        may_also=["ASYNC-04"],
        check="test_progress_is_monotonic_and_terminal_is_final")
def completed_reads_as_running(app):
    seen: set[str] = set()

    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed":
            if doc["job_id"] in seen:
                doc["status"] = "running"
                call.set_response_json(doc)
                call.set_response_header("retry-after", "1")
            seen.add(doc["job_id"])
    return _on_status(fn)(app)


@mutant("ASYNC-05", "while a job runs, every other read is served from a lagging replica (counts go back)",
        # A stale read can list no result for an item ASYNC-03 read back as applied after the previous
        # poll: a result known and not shown, when a stale read falls there (3 runs in 10 alone).
        may_also=["ASYNC-03"],
        check="test_progress_is_monotonic_and_terminal_is_final")
def counts_go_back(app):
    # Slowed (allowed: the rule is about an intermediate state): the lag shows only across several
    # polls of one running job; ASYNC-05 sees a job running on an unslowed server too (it grows jobs).
    # One item a chunk: ASYNC-05's first job (9 items) then runs about 0.6 s, long enough for the 4th
    # poll the lag needs to come while it runs on a loaded machine (2 a chunk, large jobs unslowed: missed
    # 6 of 13 runs at a load average of 15-20; 1 a chunk: caught 6 of 6).
    _slow(app, chunk=1)
    reads: dict[str, int] = {}
    fresh: dict[str, list[bytes]] = {}
    lock = threading.Lock()

    def fn(call: Call) -> None:
        doc = _job(call)
        if not doc or doc.get("status") not in ("queued", "running") or "cursor=" in call.query:
            return  # the replica lags on the job's first page; later pages follow that read
        with lock:
            job = doc["job_id"]
            reads[job] = reads.get(job, 0) + 1
            copies = fresh.setdefault(job, [])
            if reads[job] % 2 == 0 and len(copies) >= 2:
                call.response_body = copies[-2]  # the replica lags one fresh read behind
            else:
                copies.append(call.response_body)
    return _on_status(fn)(app)


@mutant("ASYNC-05", "results paged three at a time (legal); a later page (with a cursor) is served by a results "
                   "query that counts the rows it fetched: its succeeded and failed counts are those of its own three "
                   "results, far behind the first page's", check="test_progress_is_monotonic_and_terminal_is_final")
def page_counts_of_the_page(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and "cursor=" in call.query:
            page = doc["results"]
            doc["succeeded"] = sum(1 for r in page if r.get("status") == "ok")
            doc["failed"] = sum(1 for r in page if r.get("status") == "error")
            doc["pending"] = doc["total"] - doc["succeeded"] - doc["failed"]
            call.set_response_json(doc)
    return _small_jobs_in_pages_of_three(app, _on_status(fn)(app))


@mutant("ASYNC-05", "results paged three at a time (legal); the first page of a completed job says running (a stale "
                   "status cache), its later pages say completed: a client paging through sees the end, then the "
                   "next read's first page goes back to running",
        # The job never ends for a client that reads the first page: the checks that wait for the end
        # of a job meet the deadline (2 s here, not 60 s, so that the mutant runs in seconds).
        profile={"async": {"deadline_seconds": 2}},
        # ASYNC-04: a job that never shows a terminal state to a client reading it (a true FAIL).
        also=["ASYNC-04"], errors=["ASYNC-08", "ASYNC-09", "ASYNC-12", "ASYNC-13", "IDEM-05"],
        check="test_progress_is_monotonic_and_terminal_is_final")
def first_page_stays_running(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed" and "cursor=" not in call.query:
            doc["status"] = "running"
            call.set_response_json(doc)
            call.set_response_header("retry-after", "1")
    return _small_jobs_in_pages_of_three(app, _on_status(fn)(app))


@mutant("ASYNC-05", "a finished job's error results are re-rendered with another code on later reads",
        check="test_progress_is_monotonic_and_terminal_is_final")
def finished_result_changes(app):
    seen: set[tuple[str, str]] = set()

    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed":
            key = (doc["job_id"], call.query)  # the same page read again (the next page is a first read)
            if key in seen:
                for r in doc["results"]:
                    if isinstance(r.get("error"), dict):
                        r["error"]["code"] = "processing_error"
                call.set_response_json(doc)
            seen.add(key)
    return _on_status(fn)(app)


# -- ASYNC-06 ----------------------------------------------------------------------------------------

@mutant("ASYNC-06", "no Retry-After on the 202 nor on a running job's status",
        check="test_retry_after_on_202_and_running_status")
def no_retry_after(app):

    def fn(call: Call) -> None:
        call.set_response_header("retry-after", None)
    inner = _on_status(fn)(app)
    return Rewrite(inner, method="POST", path=JOBS, response=fn)


@mutant("ASYNC-06", "the 202 carries Retry-After but a running job's status does not (unslowed server)",
        check="test_retry_after_on_202_and_running_status")
def no_retry_after_while_running(app):
    def fn(call: Call) -> None:
        call.set_response_header("retry-after", None)
    return _on_status(fn)(app)


@mutant("ASYNC-06", "a running job's status carries Retry-After but the 202 does not",
        check="test_retry_after_on_202_and_running_status")
def no_retry_after_on_202(app):
    def fn(call: Call) -> None:
        call.set_response_header("retry-after", None)
    return _on_create(fn)(app)


@mutant("ASYNC-06", "Retry-After computed as a float of seconds (\"0.5\") on the 202 and on a running job's status: "
        "not an HTTP delay-seconds (1*DIGIT), so a client parsing it as one fails",
        check="test_retry_after_on_202_and_running_status")
def fractional_retry_after(app):
    def fn(call: Call) -> None:
        if any(k.lower() == b"retry-after" for k, _ in call.response_headers):
            call.set_response_header("retry-after", "0.5")
    inner = _on_status(fn)(app)
    return Rewrite(inner, method="POST", path=JOBS, response=fn)


# -- ASYNC-07 ----------------------------------------------------------------------------------------

def _exists(app: Any, job_id: str) -> bool:
    conn = app.state.jobs.store.storage.connection()
    return conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is not None


@mutant("ASYNC-07", "an unknown job id answers 200 with a placeholder queued job",
        check="test_unknown_job_is_404_with_json_error")
def unknown_job_200(app):
    def fn(call: Call) -> None:
        job_id = call.path[len(JOBS) + 1:]
        if call.status == 404 and not _exists(app, job_id):
            call.set_response_json({"job_id": job_id, "status": "queued", "total": 0, "succeeded": 0,
                                    "failed": 0, "pending": 0, "results": []}, status=200)
    return _on_status(fn)(app)


@mutant("ASYNC-07", "an unknown job id gets the framework's HTML 404 page",
        check="test_unknown_job_is_404_with_json_error")
def unknown_job_html(app):
    def fn(call: Call) -> None:
        if call.status == 404:
            call.response_body = b"<html><body><h1>404 Not Found</h1></body></html>"
            call.set_response_header("content-type", "text/html")
    return _on_status(fn)(app)


@mutant("ASYNC-07", "cancelling (DELETE) an unknown job id crashes: 500 text/plain instead of a 404 JSON error",
        may_also=["ROB-01"],  # fuzzing DELETE with generated ids meets the 500 (full matrix)
        check="test_unknown_job_is_404_with_json_error")
def unknown_job_cancel_500(app):
    def fn(call: Call) -> None:
        if call.status == 404 and not _exists(app, call.path[len(JOBS) + 1:]):
            call.status = 500
            call.response_body = b"Internal Server Error"
            call.set_response_header("content-type", "text/plain")
    return _on_status(fn, method="DELETE")(app)


# -- ASYNC-08 ----------------------------------------------------------------------------------------

@mutant("ASYNC-08", "job creation ignores the Idempotency-Key: a retry starts a second job",
        also=["IDEM-10"],  # a malformed key on the async endpoint is dropped, not refused
        check="test_retried_creation_returns_the_same_job")
def job_key_ignored(app):
    return _drop_request_header(app, b"idempotency-key", JOBS)


@mutant("ASYNC-08", "job creation looks the key up among active jobs only: once the job has ended, a retry with "
        "the same key and body starts a second job",
        # IDEM-05's async check retries the first client's key after the second client's request: if the
        # first client's job ended in between, that retry gets a new job (timing: full matrix).
        may_also=["IDEM-05"],
        check="test_retried_creation_returns_the_same_job")
def job_key_only_while_active(app):
    # A retry that reaches the job while it runs gets it; a client whose first attempt timed out and
    # that retries after the job ended gets a new one (its items run again).
    storage = app.state.service.idempotency.storage

    def forget_if_job_ended(client: str, key: str) -> None:
        with storage.transaction() as conn:
            row = conn.execute("SELECT body FROM idempotency_keys WHERE client = ? AND key = ? AND state = 'done'",
                               (client, key)).fetchone()
            doc = orjson.loads(row[0]) if row and row[0] else None
            if not isinstance(doc, dict) or "job_id" not in doc:
                return
            job = conn.execute("SELECT status FROM jobs WHERE id = ?", (doc["job_id"],)).fetchone()
            if job and job[0] in ("completed", "failed", "cancelled"):
                conn.execute("DELETE FROM idempotency_keys WHERE client = ? AND key = ?", (client, key))

    async def hook(call: Call) -> None:
        key = call.header("idempotency-key")
        if key:
            await to_thread.run_sync(forget_if_job_ended, client_of(call), key)
    return Rewrite(app, method="POST", path=JOBS, request=hook)


@mutant("ASYNC-08", "Prefer: respond-async on the sync endpoint creates the job before the Idempotency-Key is looked "
        "at: a retry with the same key starts a second job (the async endpoint honours the key)",
        check="test_retried_prefer_async_request_returns_the_same_job")
def prefer_async_ignores_key(app):
    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/orders/batch" and any(
                k.lower() == b"prefer" and b"respond-async" in v.lower() for k, v in scope["headers"]):
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"idempotency-key"])
        await app(scope, receive, send)
    wrapped.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return wrapped


# -- ASYNC-09 ----------------------------------------------------------------------------------------

def _owner(app: Any, job_id: str) -> str | None:
    conn = app.state.jobs.store.storage.connection()
    row = conn.execute("SELECT client FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0] if row else None


@mutant("ASYNC-09", "any client can read any job (the lookup ignores the caller)",
        check="test_another_client_cannot_read_or_cancel_the_job")
def foreign_job_readable(app):
    store = app.state.jobs.store
    load = store.load

    def any_client(client, job_id, *args, **kw):
        return load(_owner(app, job_id) or client, job_id, *args, **kw)
    store.load = any_client
    return app


@mutant("ASYNC-09", "any client can cancel any job (the cancel ignores the caller)",
        check="test_another_client_cannot_read_or_cancel_the_job")
def foreign_job_cancellable(app):
    store = app.state.jobs.store
    cancel = store.cancel

    def any_client(client, job_id):
        return cancel(_owner(app, job_id) or client, job_id)
    store.cancel = any_client
    return app


@mutant("ASYNC-09", "the owner check guards only the first page: with a cursor, any client reads any job's later pages",
        check="test_another_client_cannot_read_a_later_page_of_the_job")
def foreign_job_pages_readable(app):
    store = app.state.jobs.store
    load = store.load

    def owner_on_first_page_only(client, job_id, cursor=0, *args, **kw):
        return load((_owner(app, job_id) or client) if cursor else client, job_id, cursor, *args, **kw)
    store.load = owner_on_first_page_only
    return app


# -- ASYNC-10 ----------------------------------------------------------------------------------------

@mutant("ASYNC-10", "DELETE answers 200 with the job but cancels nothing",
        check="test_cancel_stops_pending_items_and_keeps_finished_ones")
def cancel_ignored(app):
    store = app.state.jobs.store
    store.cancel = lambda client, job_id: store.load(client, job_id)
    return app


@mutant("ASYNC-10", "cancelling also throws away the results of the items already finished",
        check="test_cancel_stops_pending_items_and_keeps_finished_ones")
def cancel_discards_finished_results(app):
    store = app.state.jobs.store
    cancel = store.cancel

    def discard(client, job_id):
        job = cancel(client, job_id)
        if job is not None:
            with store.storage.transaction() as conn:
                conn.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
                conn.execute("UPDATE jobs SET processed = 0, succeeded = 0, failed = 0 WHERE id = ?", (job_id,))
        return job
    store.cancel = discard
    return app


# -- ASYNC-12 ----------------------------------------------------------------------------------------

@mutant("ASYNC-12", "a finished job is purged once its results have been read",
        check="test_results_stay_readable_after_the_end",
        # A job of more than one page is gone before its second page is read: the paging checks of
        # ASYNC-04 and ASYNC-09 cannot read it whole (a setup failure).
        errors=["ASYNC-03", "ASYNC-04", "ASYNC-05", "ASYNC-06", "ASYNC-09", "ASYNC-10"])
def purged_after_first_read(app):
    store = app.state.jobs.store

    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") in ("completed", "failed", "cancelled"):
            with store.storage.transaction() as conn:
                conn.execute("DELETE FROM job_results WHERE job_id = ?", (doc["job_id"],))
                conn.execute("DELETE FROM jobs WHERE id = ?", (doc["job_id"],))
    return _on_status(fn)(app)


@mutant("ASYNC-12", "the job store keeps one finished job per client (\"the last import\"): creating a job purges "
        "the client's earlier finished jobs, far inside the documented retention",
        # The kit's checks run side by side as one client: any check reading its job after it ended can
        # find it purged by another check's new job (a 404 on a poll or a page: a FAIL, or an ERROR where
        # the job was only being waited for). Which ones do depends on scheduling.
        may_also=["ASYNC-01", "ASYNC-02", "ASYNC-03", "ASYNC-04", "ASYNC-05", "ASYNC-06", "ASYNC-08", "ASYNC-09",
                  "ASYNC-10", "ASYNC-13", "IDEM-05"],
        check="test_results_stay_readable_after_the_end")
def latest_job_only(app):
    store = app.state.jobs.store
    insert = store.insert

    def insert_and_forget_the_last(conn, client, batch, callback_url):
        old = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE client = ? AND status IN "
                                          "('completed', 'failed', 'cancelled')", (client,))]
        for job_id in old:
            conn.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return insert(conn, client, batch, callback_url)
    store.insert = insert_and_forget_the_last
    return app


# -- ASYNC-13 ----------------------------------------------------------------------------------------

@mutant("ASYNC-13", "Prefer: respond-async is ignored: the batch is processed synchronously (200)",
        check="test_prefer_respond_async_on_the_sync_endpoint")
def prefer_ignored(app):
    return _drop_request_header(app, b"prefer")


@mutant("ASYNC-13", "the batch becomes a job but the 202 does not say Preference-Applied",
        check="test_prefer_respond_async_on_the_sync_endpoint")
def prefer_not_acknowledged(app):
    def fn(call: Call) -> None:
        call.set_response_header("preference-applied", None)
    return Rewrite(app, method="POST", path="/orders/batch", response=fn)


# -- ASYNC-14 ----------------------------------------------------------------------------------------

@mutant("ASYNC-14", "the callback_url is accepted but no callback is ever sent", socket=True,
        profile={"async": {"callback_wait_seconds": 1.5}}, check="test_callback_is_retried_after_a_failed_delivery")
def callback_never_sent(app):
    app.state.jobs.store.claim_callback = lambda lease: None
    return app


@mutant("ASYNC-14", "a failed callback delivery is never retried", socket=True,
        profile={"async": {"callback_wait_seconds": 1.5}}, check="test_callback_is_retried_after_a_failed_delivery")
def callback_not_retried(app):
    app.state.jobs.callback_max_attempts = 1
    return app


@mutant("ASYNC-14", "the callback URL is validated, then the POST is sent to its origin only (scheme and host "
        "rebuilt from the parsed URL): its path and query are dropped", socket=True,
        profile={"async": {"callback_wait_seconds": 1.5}}, check="test_callback_posts_the_final_status_once")
def callback_to_the_origin_only(app):
    runner = app.state.jobs
    send = runner._send

    async def send_to_origin(client, job_id, url, job, attempt):
        parts = urlsplit(url)
        await send(client, job_id, f"{parts.scheme}://{parts.netloc}/", job, attempt)
    runner._send = send_to_origin
    return app


@mutant("ASYNC-14", "callbacks are sent only for jobs the worker finished: a cancelled job is never reported to its "
        "callback URL", socket=True,
        profile={"async": {"callback_wait_seconds": 1.5}}, check="test_callback_posts_when_a_job_is_cancelled")
def no_callback_when_cancelled(app):
    # The dispatcher drops what the cancel scheduled (marked delivered, never sent), whatever the timing:
    # undoing the schedule after the cancel's commit left a window in which it was already sent.
    store = app.state.jobs.store
    claim = store.claim_callback

    def claim_finished_only(lease_seconds):
        while True:
            got = claim(lease_seconds)
            if got is None or got[2].get("status") != "cancelled":
                return got
            store.callback_done(got[0], True, got[3], 1, 0.0)
    store.claim_callback = claim_finished_only
    return app


# -- legal variations --------------------------------------------------------------------------------

@variation("job results paged three at a time (the kit follows the cursor)", classes=["ASYNC"])
def results_in_small_pages(app):
    async def paged(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and _is_job(scope["path"]):
            qs = scope.get("query_string", b"").decode()
            if "limit=" not in qs:
                scope = dict(scope, query_string=(qs + ("&" if qs else "") + "limit=3").encode())
        await app(scope, receive, send)
    paged.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return paged


@variation("Azure-style status words declared in the profile, problem+json for an unknown job", classes=["ASYNC"],
           profile={"async": {"job": {"status_values": {"queued": ["NotStarted"], "running": ["Running"],
                                                         "completed": ["Succeeded"], "failed": ["Failed"],
                                                         "cancelled": ["Canceled"]}}}})
def azure_words_and_problem_json(app):
    words = {"queued": "NotStarted", "running": "Running", "completed": "Succeeded", "failed": "Failed",
             "cancelled": "Canceled"}

    def fn(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and doc.get("status") in words and "job_id" in doc:
            doc["status"] = words[doc["status"]]
            call.set_response_json(doc)
        elif call.status == 404 and isinstance(doc, dict):
            call.set_response_json({"type": "https://errors.example/job_not_found", "title": "job not found",
                                    "status": 404, "detail": doc.get("message", "")})
            call.set_response_header("content-type", "application/problem+json")
    def document(doc: dict) -> None:  # the document says what the job resource says
        document_problem_json(doc, _is_job)

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("enum"), list) and set(node["enum"]) == set(words):
                    node["enum"] = [words[w] for w in node["enum"]]
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(doc)
    inner = Rewrite(app, method=None, path=_is_job, response=fn)
    return on_openapi(document)(Rewrite(inner, method="POST", path=JOBS, response=fn))


@variation("cancel is an AIP-style custom method, POST /imports/batch/{job_id}/cancel, answered 303 See Other to the "
           "job once accepted (RFC 9110 §15.4.4: the client reads the job with GET)", classes=["ASYNC"],
           profile={"endpoints": {"cancel": {"method": "POST", "path": "/imports/batch/{job_id}/cancel"}}})
def cancel_303_see_other(app):
    # The cancel itself is the reference server's (DELETE on the job); an unknown job still gets 404, an
    # ended one 409, as before.
    async def see_other(scope, receive, send):
        path = scope.get("path", "")
        if not (scope["type"] == "http" and scope["method"] == "POST" and _is_job(path) and path.endswith("/cancel")):
            await app(scope, receive, send)
            return
        job = path[:-len("/cancel")]
        start: dict = {}
        parts: list[bytes] = []

        async def capture(msg):
            if msg["type"] == "http.response.start":
                start.update(msg)
            elif msg["type"] == "http.response.body":
                parts.append(msg.get("body", b""))
        await app(dict(scope, method="DELETE", path=job, raw_path=job.encode()), receive, capture)
        if start["status"] == 200:
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", job.encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send(start)
        await send({"type": "http.response.body", "body": b"".join(parts)})
    see_other.router = getattr(app, "router", None)  # type: ignore[attr-defined]

    def document(doc: dict) -> None:  # the document says where the cancel is and what it answers
        paths = doc.get("paths", {})
        job_path = next((p for p in paths if p.startswith(JOBS + "/{")), None)
        delete = dict((paths.get(job_path) or {}).get("delete") or {})
        if not delete:
            return
        responses = {k: v for k, v in (delete.get("responses") or {}).items() if not str(k).startswith("2")}
        responses["303"] = {"description": "cancelled: see the job",
                            "headers": {"Location": {"schema": {"type": "string"}}}}
        post = dict(delete, responses=responses, operationId=str(delete.get("operationId", "cancel_job")) + "_post")
        paths[job_path + "/cancel"] = {"post": post}
    return on_openapi(document)(see_other)



@variation("cancel is a PATCH of the job with a body, {\"status\": \"cancelled\"} (Salesforce Bulk API 2.0 style), "
           "declared in the profile's endpoints.cancel; the body is validated before the job is looked up (a FastAPI "
           "handler), so a PATCH without it gets 422 whatever the job", classes=["ASYNC"],
           profile={"endpoints": {"cancel": {"method": "PATCH", "path": "/imports/batch/{job_id}",
                                             "body": {"status": "cancelled"}}}})
def cancel_by_patch_with_body(app):
    async def patch(scope, receive, send):
        path = scope.get("path", "")
        if not (scope["type"] == "http" and _is_job(path) and scope["method"] not in ("GET", "HEAD")):
            await app(scope, receive, send)
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        allow: list = []
        if scope["method"] != "PATCH":  # the job takes GET and PATCH (RFC 9110 §15.5.6: say so in Allow)
            answer, status = {"error": "method_not_allowed", "message": "cancel a job with PATCH"}, 405
            allow = [(b"allow", b"GET, HEAD, PATCH")]
        else:
            try:
                doc = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict) and doc.get("status") == "cancelled":
                await app(dict(scope, method="DELETE"), receive, send)
                return
            answer, status = {"error": "invalid_body",
                              "message": "the body must be {\"status\": \"cancelled\"}"}, 422
        out = orjson.dumps(answer)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode()),
                                *allow]})
        await send({"type": "http.response.body", "body": out})
    patch.router = getattr(app, "router", None)  # type: ignore[attr-defined]

    def document(doc: dict) -> None:  # the document says the cancel is a PATCH with that body
        paths = doc.get("paths", {})
        job_path = next((p for p in paths if p.startswith(JOBS + "/{")), None)
        delete = dict((paths.get(job_path) or {}).pop("delete", None) or {})
        if delete:
            responses = dict(delete.get("responses") or {})
            responses["422"] = responses.get("400") or {"description": "invalid body"}
            paths[job_path]["patch"] = dict(delete, responses=responses, requestBody={
                "required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"const": "cancelled"}}}}}})
    return on_openapi(document)(patch)
