"""Async jobs as the kit sees them: submit, read every page of a job, poll it to a terminal state.

Everything goes through the profile (`endpoints.async`/`job`/`cancel`, `async.job` pointers and
status words, `async.poll_interval`/`poll_max_wait`/`deadline_seconds`), never canonical names.
Polling honours `Retry-After`, bounded: one wait is at most `poll_max_wait` and never past the
deadline. Every poll is an exchange of the check's evidence, annotated with the progress it showed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit

import httpx

from ._client import SetupError, Target, retry_after_seconds
from ._envelope import CANONICAL_JOB, Envelope, Result, json_of, pointer_get

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
COUNTS = ("total", "succeeded", "failed", "pending")
_MAX_PAGES = 10000



class JobMap:
    """The profile's `async.job` mapping over the canonical job shapes (SPEC §2)."""

    def __init__(self, declared: dict[str, Any] | None):
        declared = dict(declared or {})
        words = declared.pop("status_values", None) or {}
        self.m = {**CANONICAL_JOB, **declared}
        self.words = {name: list(words.get(name) or [name]) for name in STATUSES}

    def pointer(self, key: str) -> str:
        """Where the job resource holds `key` (a JSON Pointer; cursor_param is a query name)."""
        return self.m[key]

    def get(self, doc: Any, key: str) -> Any:
        return pointer_get(doc, self.m[key], None)

    def status(self, doc: Any) -> tuple[str | None, Any]:
        """(canonical status or None when the target's word is not declared, the raw value)."""
        raw = self.get(doc, "status")
        for name, words in self.words.items():
            if raw in words:
                return name, raw
        return None, raw

    def word(self, name: str) -> str:
        return str(self.words[name][0])


@dataclass
class Snapshot:
    """One reading of a job resource (every page of its results)."""

    http_status: int
    doc: Any
    status: str | None
    raw_status: Any
    counts: dict[str, Any]
    results: list[Result]
    raw_results: list[Any]
    retry_after: str | None
    pages: int = 1
    at: float = field(default_factory=time.monotonic)
    cursor_loop: bool = False
    results_missing: bool = False  # the results member is absent or not a list
    # Set on a reading kept without its results (`without_results`): how many it had.
    result_count: int | None = None
    # What each later page said of the job, in the order read: (canonical status or None, raw status,
    # counts). A page is a reading of the job too: ASYNC-05 wants it not behind the reading before it.
    page_readings: list[tuple[str | None, Any, dict[str, Any]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.http_status < 300

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def count(self, name: str) -> int | None:
        value = self.counts.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def without_results(self) -> "Snapshot":
        """This reading without its results and body (status, counts, headers and how many results
        it had are kept): what a check that judges only those keeps of a job of thousands of items."""
        return replace(self, doc=None, results=[], raw_results=[], result_count=len(self.results))

    def progress(self) -> str:
        c = self.counts
        shown = self.result_count if self.result_count is not None else len(self.results)
        return (f"{self.raw_status!r}: {c.get('succeeded')} succeeded, {c.get('failed')} failed, "
                f"{c.get('pending')} pending of {c.get('total')}; {shown} results"
                + (f" over {self.pages} pages" if self.pages > 1 else ""))


@dataclass
class Accepted:
    """What a 202 said: the job id, its status URL and Location (as sent)."""

    resp: httpx.Response
    job_id: Any
    status_url: Any
    location: str | None
    base: str | None = None  # the base URL of the instance that answered the 202 (FLEET reads it elsewhere)


class Jobs:
    """The async side of one check's target."""

    def __init__(self, target: Target, envelope: Envelope):
        self.target = target
        self.envelope = envelope
        p = target.profile
        self.map = JobMap(p.get("async.job"))
        self.deadline_s = float(p.get("async.deadline_seconds", 60))
        self.interval = float(p.get("async.poll_interval", 0.2))
        self.max_wait = float(p.get("async.poll_max_wait", 5))

    def as_client(self, which: str = "second") -> "Jobs":
        return Jobs(self.target.as_client(which), self.envelope)

    # -- creation ----------------------------------------------------------------
    def submit(self, items: list[Any], *, headers: dict[str, str] | None = None,
               extra: dict[str, Any] | None = None, endpoint: str = "async", note: str | None = None
               ) -> httpx.Response:
        return self.target.batch(items, headers=headers, extra=extra, endpoint=endpoint,
                                 note=note or "create an async job")

    def accepted(self, resp: httpx.Response) -> Accepted:
        """The 202's job id and status URL, or a setup error (ASYNC-01 judges the 202 itself)."""
        doc = json_of(resp)
        job_id = self.map.get(doc, "job_id")
        # Any 2xx naming a job will do for setting up other checks: whether it is a 202 is ASYNC-01's.
        if not 200 <= resp.status_code < 300 or job_id in (None, ""):
            raise SetupError(f"creating a job got {resp.status_code} without a job id, so no job to check "
                             "(ASYNC-01 reports it)")
        return Accepted(resp, job_id, self.map.get(doc, "status_url"), resp.headers.get("location"),
                        self.target.base_url)

    def create(self, items: list[Any], **kw: Any) -> Accepted:
        return self.accepted(self.submit(items, **kw))

    # -- where a job lives -----------------------------------------------------------
    # A URL the target hands out (a status URL, a Location) is a URI reference: it is resolved against
    # the URI of the request that returned it (RFC 3986 §5, RFC 9110 §10.2.2), never joined onto the
    # profile's base path like an `endpoints.*` template: an API under /v1 hands out /v1/jobs/7 (not
    # /v1/v1/jobs/7), and `batch/7` in answer to POST /imports/batch means /imports/batch/7.
    def resolve(self, url: str, resp: httpx.Response | None = None) -> str:
        """`url` resolved against the URI of the request `resp` answered (the target's base URL
        without one): an absolute URL."""
        try:
            base = str(resp.request.url) if resp is not None else None
        except RuntimeError:  # a response built without a request
            base = None
        return urljoin(base or self.target.base_url + "/", url)

    def same_host(self, url: str, resp: httpx.Response | None = None) -> bool:
        """Whether a URL the target handed out (in `resp`) points at the target itself (the kit calls
        nothing else)."""
        return urlsplit(self.resolve(url, resp)).netloc == urlsplit(self.target.base_url).netloc

    def handed_out(self, acc: Accepted, url: str) -> str | None:
        """A URL of `acc`'s 202 (its status URL or Location) as this target reaches it: resolved
        against the creating request's URI and, when this is another instance of the service
        (FLEET) and the URL lies under the creating instance's base URL, the same path under this
        instance's base URL. None when it is on another host (the kit does not follow it)."""
        full = self.resolve(url, acc.resp)
        here, there = self.target.base_url.rstrip("/"), (acc.base or "").rstrip("/")
        if there and here != there and (full == there or full.startswith(there + "/")
                                        or full.startswith(there + "?")):
            full = here + full[len(there):]
        return full if urlsplit(full).netloc == urlsplit(here).netloc else None

    def url_of(self, acc: Accepted | Any, status_url: Any = None) -> str:
        """The job's URL: the profile's `endpoints.job` template, else the status URL the target gave
        (resolved against the URI of the request that returned it)."""
        job_id = acc.job_id if isinstance(acc, Accepted) else acc
        status_url = acc.status_url if isinstance(acc, Accepted) else status_url
        if self.target.profile.get("endpoints.job"):
            return self.target.url_for("job", job_id=job_id)
        if isinstance(status_url, str) and status_url:
            full = (self.handed_out(acc, status_url) if isinstance(acc, Accepted)
                    else self.resolve(status_url) if self.same_host(status_url) else None)
            if full:
                return full
        raise SetupError("the profile declares no endpoints.job and the job has no status URL on the target's host")

    def cancel_url(self, job_id: Any) -> tuple[str, str]:
        ep = self.target.endpoint("cancel")  # skips the check when the profile declares none
        return ep.get("method", "DELETE"), self.target.url_for("cancel", job_id=job_id)

    def cancel(self, job_id: Any, *, note: str | None = None) -> httpx.Response:
        """Cancel the job as the profile declares it: its method and path, and its fixed body, query and
        headers where it has them (a `PATCH` of the job with `{"status": "cancelled"}`, say: a cancel
        sent without its declared body is refused by such a target whatever the job)."""
        ep = self.target.endpoint("cancel")
        method, path = self.cancel_url(job_id)
        body = ep.get("body")
        return self.target.request(method, path, json_body=dict(body) if body else None,
                                   headers=dict(ep.get("headers") or {}) or None,
                                   params=list((ep.get("query") or {}).items()) or None,
                                   note=note or "cancel the job")

    # -- reading -------------------------------------------------------------------
    def read(self, url: str, *, note: str | None = None) -> Snapshot:
        """Read the job and every page of its results (following the cursor)."""
        ep = self.target.profile.get("endpoints.job") or {}
        method = ep.get("method", "GET")
        headers = dict(ep.get("headers") or {})
        params: list[tuple[str, Any]] = list((ep.get("query") or {}).items())
        resp = self.target.request(method, url, params=params, headers=headers, note=note)
        doc = json_of(resp)
        status, raw_status = self.map.status(doc)
        raw = pointer_get(doc, self.map.m["results"], None)
        snap = Snapshot(resp.status_code, doc, status, raw_status,
                        {name: self.map.get(doc, name) for name in COUNTS}, [], [],
                        resp.headers.get("retry-after"), results_missing=not isinstance(raw, list))
        if not snap.ok or not isinstance(doc, dict):
            return snap
        raws = list(raw) if isinstance(raw, list) else []
        seen: set[str] = set()
        cursor = self.map.get(doc, "next_cursor")
        while cursor not in (None, "") and snap.pages < _MAX_PAGES:
            if str(cursor) in seen:
                snap.cursor_loop = True
                break
            seen.add(str(cursor))
            page = self.target.request(method, url, params=[*params, (self.map.m["cursor_param"], cursor)],
                                       headers=headers, note="next page of the job's results")
            page_doc = json_of(page)
            more = pointer_get(page_doc, self.map.m["results"], None)
            if not 200 <= page.status_code < 300 or not isinstance(more, list):
                raise SetupError(f"a page of the job's results (cursor {cursor!r}) got {page.status_code}")
            raws.extend(more)
            snap.pages += 1
            snap.page_readings.append((*self.map.status(page_doc), {name: self.map.get(page_doc, name)
                                                                   for name in COUNTS}))
            cursor = self.map.get(page_doc, "next_cursor")
        snap.raw_results = raws
        snap.results = [self.envelope.parse_result(r, i) for i, r in enumerate(raws)]
        return snap

    def poll(self, url: str, *, what: str = "poll",
             between: Callable[[Snapshot], bool | None] | None = None, keep: bool = True,
             each: Callable[[Snapshot], Snapshot] | None = None) -> list[Snapshot]:
        """Read the job until it is terminal, unreadable, unrecognisable or past the deadline.

        `between(snapshot)` runs after every poll that shows the job still active, before the wait for
        the next one: a check that looks elsewhere while the job runs (the read endpoint, ASYNC-03)
        does it there, so that what it saw lies between two polls; when it returns True (it saw
        something the next reading must show), the next poll follows at once, without the wait,
        while the job is likelier still to run. `keep=False`: only the last
        reading is returned (and kept while polling): a check that judges the end alone does not
        hold every reading of a job of thousands of results (issue 18's memory goal);
        `each(snapshot)`: every reading goes through it as it arrives (after `between`), and what it
        returns is kept: a check that judges each reading on its own keeps it without its results
        (`Snapshot.without_results`)."""
        start = time.monotonic()
        deadline = start + self.deadline_s
        snaps: list[Snapshot] = []
        n = 0
        while True:
            n += 1
            if not keep:  # dropped before the next reading is made: one job of thousands of results at a time
                snaps.clear()
                snap = None
            snap = self.read(url, note=f"{what} {n}")
            self.target.note(f"-> {snap.progress()} at {snap.at - start:.2f}s")
            done = not snap.ok or snap.status is None or snap.terminal
            look_again = bool(between(snap)) if between is not None and not done else False
            snaps.append(each(snap) if each is not None else snap)
            if done:
                return snaps
            now = time.monotonic()
            if now >= deadline:
                self.target.note(f"deadline of {self.deadline_s:g}s (async.deadline_seconds) reached")
                return snaps
            if look_again:
                continue
            advised = retry_after_seconds(snap.retry_after) if snap.retry_after else None
            wait = min(advised if advised is not None else self.interval, self.max_wait, deadline - now)
            time.sleep(max(0.0, wait))

    def wait_done(self, url: str, *, what: str = "poll") -> Snapshot:
        """Poll to a terminal state for a check that needs one (anything else is a setup error here;
        ASYNC-02/ASYNC-04 judge it); the last reading (the earlier ones are not kept)."""
        last = self.poll(url, what=what, keep=False)[-1]
        if not last.ok:
            raise SetupError(f"reading the job got {last.http_status} (ASYNC-01/ASYNC-04 report it)")
        if last.status is None:
            raise SetupError(f"the job's status {last.raw_status!r} is not a declared status word "
                             "(ASYNC-02 reports it)")
        if not last.terminal:
            raise SetupError(f"the job did not end within {self.deadline_s:g}s (ASYNC-04 reports it)")
        return last


def by_id(results: list[Result]) -> dict[Any, list[Result]]:
    out: dict[Any, list[Result]] = {}
    for r in results:
        out.setdefault(_key(r.id), []).append(r)
    return out


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, type(None))) else repr(value)


def fingerprint(r: Result) -> Any:
    """What must never change about a finished item's result."""
    return (r.ok, _key(r.id), r.error_code, repr(r.data) if r.ok else None)
