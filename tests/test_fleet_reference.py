"""The reference server as a fleet: several `batchspec serve` processes on one PostgreSQL database.

Real processes on loopback ports over a throwaway cluster (the `postgres` fixture). What the FLEET
checks see over HTTP is tested by the kit itself (tests/test_fleet_kit.py); here the server's own
guarantees, including FLEET-05, which no HTTP client can cause: an instance SIGKILLed mid-job, the
job taken over by another instance, every item applied exactly once. A negative control proves the
harness notices a fleet whose takeover restarts the job from the beginning.
"""
from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from conftest import finish_job
from _reference_process import start_server, stop_server
from test_async_restart import BAD, ITEMS, _kill_when_part_way, _verdict

JSON = {"Content-Type": "application/json"}

# A broken instance for the negative control: a job it finds already under way (started by another
# instance) is started again from the beginning, as a takeover that forgets the committed progress would.
RESTART_TAKEN_OVER = """
import sys
from reference_server import jobs

_orig = jobs.JobStore.step
_mine = set()

def step(self):
    with self.storage.transaction() as conn:
        rows = conn.execute("SELECT id FROM jobs WHERE status = 'running' AND processed > 0").fetchall()
        for (job_id,) in rows:
            if job_id not in _mine:
                _mine.add(job_id)
                conn.execute("DELETE FROM job_results WHERE job_id = ?", (job_id,))
                conn.execute("UPDATE jobs SET processed = 0, succeeded = 0, failed = 0 WHERE id = ?", (job_id,))
    out = _orig(self)
    if out is not None:
        _mine.add(out[0])
    return out

jobs.JobStore.step = step
from reference_server.__main__ import main
main(sys.argv[1:])
"""


class Fleet:
    """``n`` reference server processes on one database; ``kill(i)`` SIGKILLs one, ``start(i)`` restarts it."""

    def __init__(self, db: str, n: int, codes: list[str | None] | None = None) -> None:
        self.db = db
        self.codes = codes or [None] * n
        self.procs: list[Any] = [None] * n
        self.urls: list[str] = [""] * n
        for i in range(n):
            self.start(i)

    def start(self, i: int) -> None:
        self.procs[i], self.urls[i] = start_server(self.db, self.codes[i])

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)

    def close(self) -> None:
        for p in self.procs:
            if p is not None:
                stop_server(p)


@pytest.fixture(scope="module")
def fleet(postgres) -> Iterator[Fleet]:
    """Two instances shared by the tests of this module (every test uses fresh ids and keys)."""
    f = Fleet(postgres.new_database("fleet"), 2)
    try:
        yield f
    finally:
        f.close()


def _items(n: int, tag: str | None = None) -> list[dict[str, Any]]:
    tag = tag or uuid.uuid4().hex[:8]
    return [{"id": f"{tag}-{k:05d}", "amount": 2.5, "currency": "GBP"} for k in range(n)]


def _read_everywhere(urls: list[str], ids: list[str], token: str | None = None) -> dict[str, list[Any]]:
    """Every id read back on every instance: id -> [order or None per instance]."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def read(args: tuple[str, list[str]]) -> dict[str, Any]:
        base, part = args
        out: dict[str, Any] = {}
        with httpx.Client(base_url=base, timeout=10, headers=headers) as c:
            for item_id in part:
                r = c.get("/orders/" + item_id)
                out[item_id] = r.json() if r.status_code == 200 else None
        return out

    jobs = [(base, ids[k::2]) for base in urls for k in range(2)]
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(read, jobs))
    seen: dict[str, list[Any]] = {i: [] for i in ids}
    for part in parts:
        for item_id, order in part.items():
            seen[item_id].append(order)
    return seen


def test_unreachable_database_is_one_clear_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "reference_server", "--port", "0",
                           "--db", "postgresql://u:hunter2@127.0.0.1:1/none"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchspec serve: cannot connect to the PostgreSQL database")
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_effects_of_one_instance_are_read_on_every_other(fleet):
    items = _items(300)
    resp = httpx.post(fleet.urls[0] + "/orders/batch", content=orjson.dumps({"operations": items}),
                      headers=JSON, timeout=30)
    assert resp.status_code == 200 and resp.json()["summary"]["succeeded"] == 300
    seen = _read_everywhere(fleet.urls, [i["id"] for i in items])
    assert all(len(v) == 2 and all(o is not None and o["version"] == 1 for o in v) for v in seen.values())


def test_keyed_batch_across_instances_is_applied_once(fleet):
    """Concurrent duplicates spread over both instances, then a sequential retry on the other one."""
    items = _items(1000)
    body = orjson.dumps({"operations": items})
    key = "fleet-" + uuid.uuid4().hex
    start = threading.Barrier(8)

    def send(k: int) -> httpx.Response:
        start.wait()
        return httpx.post(fleet.urls[k % 2] + "/orders/batch", content=body,
                          headers={**JSON, "Idempotency-Key": key}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    statuses = [r.status_code for r in answers]
    print("concurrent keyed duplicates over 2 instances:", statuses)
    assert set(statuses) <= {200, 409}, statuses
    fresh = [r for r in answers if r.status_code == 200 and r.headers.get("idempotent-replayed") != "true"]
    assert len(fresh) == 1, f"{len(fresh)} concurrent duplicates were applied: {statuses}"
    assert all(r.json()["error"] == "idempotency_key_in_use" for r in answers if r.status_code == 409)
    first = fresh[0].json()
    assert first["summary"]["succeeded"] == 1000
    for base in fleet.urls:  # the retry, on each instance: a replay of the same answer
        again = httpx.post(base + "/orders/batch", content=body, headers={**JSON, "Idempotency-Key": key}, timeout=60)
        assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
        assert again.json() == first
    seen = _read_everywhere(fleet.urls, [i["id"] for i in items[:200]])
    assert all(all(o is not None and o["version"] == 1 for o in v) for v in seen.values())


def test_same_ids_on_two_instances_at_once_are_created_once(fleet):
    """Unkeyed batches naming the same ids, sent to both instances at once: one creation per id, no 5xx."""
    items = _items(500)
    body = orjson.dumps({"operations": items})
    start = threading.Barrier(6)

    def send(k: int) -> httpx.Response:
        start.wait()
        return httpx.post(fleet.urls[k % 2] + "/orders/batch", content=body, headers=JSON, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    created: dict[str, int] = {}
    for r in answers:
        for result in r.json()["results"]:
            if result["status"] == "ok":
                created[result["id"]] = created.get(result["id"], 0) + 1
            else:
                assert result["error"]["code"] == "already_exists", result
    assert created == {i["id"]: 1 for i in items}


def test_job_submitted_to_one_instance_is_seen_and_cancelled_from_another(fleet):
    # On a loaded machine the job can end before the cancel arrives (409 job_already_finished, a
    # correct answer that tests nothing): then try again with a fresh job, a few times.
    for _attempt in range(4):
        items = _items(10000)
        resp = httpx.post(fleet.urls[0] + "/imports/batch", content=orjson.dumps({"operations": items}),
                          headers=JSON, timeout=60)
        assert resp.status_code == 202
        url = resp.json()["status_url"]
        seen = httpx.get(fleet.urls[1] + url, params={"limit": 0}, timeout=10)
        assert seen.status_code == 200 and seen.json()["job_id"] == resp.json()["job_id"]
        cancelled = httpx.delete(fleet.urls[1] + url, timeout=30)
        if not (cancelled.status_code == 409 and cancelled.json().get("error") == "job_already_finished"):
            break
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    at_cancel = cancelled.json()["succeeded"] + cancelled.json()["failed"]
    time.sleep(1.5)  # both workers had the time to run another chunk, had the cancel not held
    for base in fleet.urls:
        job = httpx.get(base + url, params={"limit": 0}, timeout=10).json()
        assert job["status"] == "cancelled" and job["succeeded"] + job["failed"] == at_cancel
    again = httpx.delete(fleet.urls[0] + url, timeout=10)
    assert again.status_code == 409 and again.json()["error"] == "job_already_finished"


def _kill_mid_job(fleet: Fleet) -> tuple[str, list[dict[str, Any]], int]:
    """Submit to instance 0, SIGKILL it once the job is part-way: (status URL, items, items done then)."""
    with httpx.Client(base_url=fleet.urls[0], timeout=10) as client:
        return _kill_when_part_way(client, "f", lambda: fleet.kill(0))


def _finish_on(base: str, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with httpx.Client(base_url=base, timeout=10) as client:
        return finish_job(client, url, timeout=60, interval=0.05)


def _survivor_verdict(fleet: Fleet, url: str, items: list[dict[str, Any]]) -> list[str]:
    job, results = _finish_on(fleet.urls[1], url)
    seen = _read_everywhere([fleet.urls[1]], [i["id"] for i in items])
    stored = {i: v[0] for i, v in seen.items()}
    return _verdict(job, results, stored, items)


def test_instance_killed_mid_job_is_taken_over_exactly_once(postgres):
    """FLEET-05: the job of a SIGKILLed instance is finished by the other; every item applied exactly once."""
    fleet = Fleet(postgres.new_database("takeover"), 2)
    try:
        url, items, done_at_kill = _kill_mid_job(fleet)
        assert 0 < done_at_kill < ITEMS
        assert _survivor_verdict(fleet, url, items) == []
        job = httpx.get(fleet.urls[1] + url, params={"limit": 0}, timeout=10).json()
        assert (job["succeeded"], job["failed"], job["pending"]) == (ITEMS - 1, 1, 0)
        fleet.start(0)  # the killed instance comes back and agrees
        assert httpx.get(fleet.urls[0] + url, params={"limit": 0}, timeout=10).json() == job
        assert httpx.get(fleet.urls[0] + "/orders/" + items[BAD - 1]["id"], timeout=10).json()["version"] == 1
    finally:
        fleet.close()


def test_harness_catches_a_fleet_whose_takeover_restarts_the_job(postgres):
    """Negative control: the takeover check above is not one that cannot fail."""
    fleet = Fleet(postgres.new_database("broken"), 2, codes=[None, RESTART_TAKEN_OVER])
    try:
        # The job is seen part-way, then instance 0 is killed: on a loaded machine the job can end in
        # between (seen in CI at load 3-4), and a job that ended is not taken over, so there is
        # nothing for the broken takeover to restart. Such an attempt proves nothing either way:
        # up to three, with instance 0 back each time; one takeover must show the double work.
        for _ in range(3):
            url, items, _ = _kill_mid_job(fleet)
            problems = _survivor_verdict(fleet, url, items)
            if problems:
                break
            fleet.start(0)
        assert any("valid items not ok" in p for p in problems), problems
    finally:
        fleet.close()
