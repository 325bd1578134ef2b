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


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(str(tmp_path / "jobs.db"))) as c:
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
