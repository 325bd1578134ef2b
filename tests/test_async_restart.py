"""ASYNC-11 on the reference server: a job survives SIGKILL mid-job and a restart on the same database.

The kit cannot restart an arbitrary target over HTTP (its ASYNC-11 check SKIPs with that reason);
here the kit's own tests can. `python -m reference_server --port P --db F` runs as a subprocess on
loopback; a 2,500-item job is created; the process is SIGKILLed while the job is running; the same
command starts again on the same database; the job must complete with exactly one result per item,
every valid item ok (none `already_exists`, which a re-applied item would get) and stored once
(version 1, read back over HTTP). A negative control proves the harness notices a server that
restarts interrupted jobs from the beginning.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from _reference_process import start_server, stop_server
from conftest import JOB_TERMINAL as TERMINAL, finish_job

ITEMS = 2500
BAD = 7  # the index of the one invalid item

# A broken server for the negative control: on start it re-queues interrupted jobs from scratch.
RESTART_FROM_SCRATCH = """
import sqlite3, sys
db = sys.argv[sys.argv.index('--db') + 1]
conn = sqlite3.connect(db)
ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")]
for job_id in ids:
    conn.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
    conn.execute("UPDATE jobs SET processed = 0, succeeded = 0, failed = 0, status = 'queued' WHERE id = ?", (job_id,))
conn.commit()
conn.close()
from reference_server.__main__ import main
main(sys.argv[1:])
"""


def _job_items(tag: str) -> list[dict[str, Any]]:
    items = [{"id": f"{tag}-{k:05d}", "amount": 1.5, "currency": "EUR"} for k in range(ITEMS)]
    items[BAD] = {"id": f"{tag}-{BAD:05d}", "amount": -1, "currency": "EUR"}
    return items


def _kill_when_part_way(client: httpx.Client, tag: str, kill: Callable[[], None]) -> tuple[str, list[dict[str, Any]], int]:
    """Create jobs through `client` until one is seen running part-way, then `kill()` the server that
    runs it: (status URL, items, items done then). Fails after 5 jobs that finished too quickly."""
    for attempt in range(5):
        items = _job_items(f"{tag}{attempt}-{os.urandom(3).hex()}")
        resp = client.post("/imports/batch", content=orjson.dumps({"operations": items}),
                           headers={"Content-Type": "application/json"})
        assert resp.status_code == 202, resp.text
        url = resp.json()["status_url"]
        while True:
            job = client.get(url, params={"limit": 0}).json()
            done = job["succeeded"] + job["failed"]
            if job["status"] in TERMINAL:
                break  # too quick for us this time: try a new job
            if 0 < done < ITEMS:
                kill()
                return url, items, done
    pytest.fail("could not catch a job in progress in 5 attempts")


def _kill_mid_job(db: str, code: str | None = None) -> tuple[str, list[dict[str, Any]], int]:
    """Create jobs until one is seen running part-way, then SIGKILL the server: (status URL, items, done)."""
    proc, base = start_server(db, code)

    def kill() -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            return _kill_when_part_way(client, "r", kill)
    finally:
        stop_server(proc)


def _finish(db: str, url: str, code: str | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict]:
    """Start again on the same database; wait for the job; (job, every result, stored order by id)."""
    proc, base = start_server(db, code)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            job, results = finish_job(client, url, timeout=30, interval=0.02)
        ids = [r["id"] for r in results]

        def read_all(part: list[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            with httpx.Client(base_url=base, timeout=10) as c:  # one keep-alive connection per thread
                for item_id in part:
                    r = c.get("/orders/" + item_id)
                    out[item_id] = r.json() if r.status_code == 200 else None
            return out

        stored: dict[str, Any] = {}
        with ThreadPoolExecutor(4) as pool:  # every item read back over HTTP
            for part in pool.map(read_all, [ids[k::4] for k in range(4)]):
                stored.update(part)
        return job, results, stored
    finally:
        stop_server(proc)


def _verdict(job: dict[str, Any], results: list[dict[str, Any]], stored: dict, items: list[dict]) -> list[str]:
    """What is wrong with the job after the restart (empty: survived, every item processed exactly once)."""
    problems = []
    if job["status"] != "completed":
        problems.append(f"job ended {job['status']} ({job['succeeded'] + job['failed']} of {ITEMS} done)")
    ids = [r["id"] for r in results]
    if sorted(ids) != sorted(i["id"] for i in items):
        problems.append(f"{len(ids)} results for {ITEMS} items ({len(set(ids))} distinct)")
    bad_id = items[BAD]["id"]
    not_ok = [r for r in results if r["id"] != bad_id and r["status"] != "ok"]
    if not_ok:
        problems.append(f"{len(not_ok)} valid items not ok, e.g. {not_ok[0]}")
    twice = [i for i, order in stored.items() if order is not None and order.get("version") != 1]
    missing = [i["id"] for k, i in enumerate(items) if k != BAD and stored.get(i["id"]) is None]
    if twice or missing:
        problems.append(f"{len(twice)} items stored twice, {len(missing)} valid items not stored")
    if stored.get(bad_id) is not None:
        problems.append("the invalid item was stored")
    return problems


def test_job_survives_sigkill_and_restart(tmp_path):
    db = str(tmp_path / "restart.db")
    url, items, done_at_kill = _kill_mid_job(db)
    job, results, stored = _finish(db, url)
    assert 0 < done_at_kill < ITEMS
    assert _verdict(job, results, stored, items) == []
    assert (job["succeeded"], job["failed"], job["pending"]) == (ITEMS - 1, 1, 0)


def test_harness_catches_a_server_that_restarts_jobs_from_scratch(tmp_path):
    """Negative control: the check above is not one that cannot fail."""
    db = str(tmp_path / "scratch.db")
    url, items, _ = _kill_mid_job(db)
    job, results, stored = _finish(db, url, RESTART_FROM_SCRATCH)
    problems = _verdict(job, results, stored, items)
    assert any("valid items not ok" in p for p in problems), problems
