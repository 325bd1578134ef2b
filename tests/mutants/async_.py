"""Mutants of class ASYNC: async jobs (202, status resource, progress, cancel, Prefer, callbacks).

Response rewrites on the job routes, or patches of the reference server's job store and runner
(`app.state.jobs`). The ASYNC checks grow their jobs until one is seen running, so most mutants run on an
unslowed server; one (counts_go_back) still slows its small jobs down (`_slow`: small
chunks with a pause between them), as a loaded server would be, so the kit sees it in progress.
"""
from __future__ import annotations

import threading
from typing import Any

from ._base import Call, Rewrite, document_problem_json, mutant, on_openapi, variation

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
        errors=["ASYNC-03", "ASYNC-04", "ASYNC-05", "ASYNC-08", "ASYNC-09", "ASYNC-10", "ASYNC-12", "ASYNC-13"])
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
    inner = _on_status(fn)(app)
    conn = app.state.jobs.store.storage.connection

    async def paged(scope, receive, send):
        # Pages of three only for small jobs (ASYNC-02's): paging the grown jobs of ASYNC-03/05 three
        # at a time took the mutant ~55 s, and only the small job's final results are what it breaks.
        if scope["type"] == "http" and scope["method"] == "GET" and _is_job(scope["path"]):
            row = conn().execute("SELECT total FROM jobs WHERE id = ?",
                                 (scope["path"][len(JOBS) + 1:].split("/")[0],)).fetchone()
            qs = scope.get("query_string", b"").decode()
            if row is not None and row[0] <= 50 and "limit=" not in qs:
                scope = dict(scope, query_string=(qs + ("&" if qs else "") + "limit=3").encode())
        await inner(scope, receive, send)
    paged.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return paged


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
        errors=["ASYNC-05", "ASYNC-08", "ASYNC-09", "ASYNC-10", "ASYNC-12", "ASYNC-13"])
def never_completes(app):
    def fn(call: Call) -> None:
        doc = _job(call)
        if doc and doc.get("status") == "completed":
            doc["status"] = "running"
            call.set_response_json(doc)
            call.set_response_header("retry-after", "1")
    return _on_status(fn)(app)


@mutant("ASYNC-04", "a chunk's last write is lost while its result still says ok",
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


# -- legal variations --------------------------------------------------------------------------------

@variation("job results paged three at a time (the kit follows the cursor)")
def results_in_small_pages(app):
    async def paged(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and _is_job(scope["path"]):
            qs = scope.get("query_string", b"").decode()
            if "limit=" not in qs:
                scope = dict(scope, query_string=(qs + ("&" if qs else "") + "limit=3").encode())
        await app(scope, receive, send)
    paged.router = getattr(app, "router", None)  # type: ignore[attr-defined]
    return paged


@variation("Azure-style status words declared in the profile, problem+json for an unknown job",
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
