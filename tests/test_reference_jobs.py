"""The reference server's job endpoints beyond what the ASYNC suite exercises: atomic jobs,
dependencies across the job, key reuse, envelope refusals, callback URL validation, paging."""
from __future__ import annotations

import time
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from reference_server import create_app


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, db_for):
    with TestClient(create_app(db_for(request.param))) as c:
        yield c


def _done(client: TestClient, url: str) -> dict[str, Any]:
    for _ in range(500):
        job = client.get(url).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"job did not end: {job}")


def test_atomic_job_fails_whole_and_applies_nothing(client):
    ops = [{"id": "a1", "amount": 1, "currency": "USD"}, {"id": "a2", "amount": -1, "currency": "USD"}]
    resp = client.post("/imports/batch", json={"operations": ops, "atomic": True})
    assert resp.status_code == 202
    job = _done(client, resp.json()["status_url"])
    assert job["status"] == "failed" and job["failed"] == 2
    assert client.get("/orders/a1").status_code == 404


def test_dependencies_span_the_whole_job(client):
    client.app.state.jobs.store.chunk_items = 1  # would split the job, but depends_on keeps it whole
    ops = [{"id": "c", "amount": 1, "currency": "USD", "depends_on": ["p"], "parent_id": "p"},
           {"id": "p", "amount": 1, "currency": "USD"}]
    job = _done(client, client.post("/imports/batch", json={"operations": ops}).json()["status_url"])
    assert [r["status"] for r in job["results"]] == ["ok", "ok"]


def test_key_replays_the_job_and_refuses_another_body(client):
    ops = [{"id": "k1", "amount": 1, "currency": "USD"}]
    first = client.post("/imports/batch", json={"operations": ops}, headers={"Idempotency-Key": "k"})
    again = client.post("/imports/batch", json={"operations": ops}, headers={"Idempotency-Key": "k"})
    other = client.post("/imports/batch", json={"operations": ops + [{"id": "k2", "amount": 1, "currency": "USD"}]},
                        headers={"Idempotency-Key": "k"})
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 422


@pytest.mark.parametrize("body, status, code", [
    ({"operations": []}, 400, "batch_empty"),
    ({"operations": [{"id": "x", "amount": 1, "currency": "USD"}] * 2}, 400, "duplicate_id"),
    ({"operations": [{"id": "x", "amount": 1, "currency": "USD"}], "callback_url": "file:///etc/passwd"},
     400, "invalid_body"),
])
def test_refused_before_anything_is_stored(client, body, status, code):
    resp = client.post("/imports/batch", json=body)
    assert (resp.status_code, resp.json()["error"]) == (status, code)


def test_results_are_paged_with_a_cursor(client):
    ops = [{"id": f"p{k}", "amount": 1, "currency": "USD"} for k in range(5)]
    url = client.post("/imports/batch", json={"operations": ops}).json()["status_url"]
    _done(client, url)
    seen, cursor = [], None
    while True:
        page = client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["id"] for r in page["results"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [o["id"] for o in ops]
    assert client.delete(url).status_code == 409


@pytest.mark.parametrize("query", ["cursor=" + "9" * 32, "limit=" + "9" * 32, "cursor=-1", "cursor=x"])
def test_out_of_range_paging_is_400_not_500(client, query):
    """schemathesis found `cursor=<32 digits>` answered 500 (an integer SQLite cannot hold)."""
    job = client.post("/imports/batch", json={"operations": [{"id": "p1", "amount": 1, "currency": "USD"}]}).json()
    resp = client.get(f"{job['status_url']}?{query}")
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_cursor"


def test_a_method_the_job_path_does_not_take_gets_405_naming_all_of_its_methods(client):
    """schemathesis found OPTIONS answered 405 with `Allow: GET, HEAD` (DELETE left out)."""
    job = client.post("/imports/batch", json={"operations": [{"id": "o1", "amount": 1, "currency": "USD"}]}).json()
    resp = client.options(job["status_url"])
    assert resp.status_code == 405
    assert {m.strip() for m in resp.headers["allow"].split(",")} >= {"GET", "DELETE"}
    assert client.delete(job["status_url"]).status_code in (200, 409)
    assert client.get(job["status_url"]).status_code == 200


def test_a_writer_is_not_starved_by_one_that_writes_again_at_once(tmp_path):
    """SQLite's busy handler retries a waiting writer after sleeps (1 ms, then up to 100 ms), so a
    thread committing transaction after transaction (the job worker, chunk after chunk) kept a cancel
    out until the job ended. The process's writers now take the lock in the order they asked: the
    second writer gets in after about one of the first one's transactions, not after all of them."""
    import threading

    from reference_server.storage import Storage

    storage = Storage(str(tmp_path / "fair.db"))
    storage.executescript("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
    stop = threading.Event()
    rounds = [0]

    def busy() -> None:
        while not stop.is_set():
            with storage.transaction() as conn:
                conn.execute("INSERT INTO t VALUES (1)")
                time.sleep(0.005)  # a chunk's work, lock held
            rounds[0] += 1

    t = threading.Thread(target=busy)
    t.start()
    try:
        time.sleep(0.05)
        before, started = rounds[0], time.monotonic()
        with storage.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (2)")
        waited, behind = time.monotonic() - started, rounds[0] - before
    finally:
        stop.set()
        t.join()
        storage.close()
    assert behind <= 2 and waited < 0.2, f"waited {waited:.3f} s behind {behind} transactions of the other writer"


def test_writers_of_one_process_go_in_order_and_time_out_clearly():
    """Waiting writers are let in first come, first served; one that waits past its timeout gets
    SQLite's own "database is locked" (the server's Busy), and a nested transaction the error SQLite
    gives, not a deadlock."""
    import sqlite3
    import threading

    from reference_server.storage import _Writers

    writers = _Writers()
    writers.acquire(1)
    order: list[int] = []
    threads = []
    for k in range(4):
        th = threading.Thread(target=lambda k=k: (writers.acquire(5), order.append(k), writers.release()))
        th.start()
        threads.append(th)
        time.sleep(0.02)  # each one queued before the next
    errors: list[BaseException] = []

    def impatient() -> None:
        try:
            writers.acquire(0.05)
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    th = threading.Thread(target=impatient)
    th.start()
    th.join(5)
    assert errors and "locked" in str(errors[0])
    writers.release()
    for th in threads:
        th.join(5)
    assert order == [0, 1, 2, 3]
    writers.acquire(1)
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        writers.acquire(1)
