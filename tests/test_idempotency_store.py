"""The reference server's idempotency store, beyond what the kit's IDEM checks see from outside."""
from __future__ import annotations

import time

import httpx
import pytest

from conformance import ASGIThreadTransport
from reference_server import Settings, create_app
from reference_server.idempotency import Claim, LostClaim, Stored

A = {"Authorization": "Bearer client-a"}


@pytest.fixture(params=["sqlite", "postgresql"])
def make_client(request, db_for):
    opened: list[ASGIThreadTransport] = []

    def make(**settings) -> tuple[httpx.Client, object]:
        app = create_app(db_for(request.param), settings=Settings(**settings))
        transport = ASGIThreadTransport(app)
        opened.append(transport)
        return httpx.Client(transport=transport, base_url="http://ref.test"), app

    yield make
    for t in opened:
        t.close()


def order(i: str, **kw) -> dict:
    return {"id": i, "amount": 5, "currency": "USD", **kw}


def test_refused_batch_stores_nothing_so_the_corrected_retry_runs(make_client):
    client, _ = make_client()
    h = {**A, "Idempotency-Key": "k"}
    bad = client.post("/orders/batch", content=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert bad.status_code == 400
    good = client.post("/orders/batch", json={"operations": [order("o1")]}, headers=h)
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers
    again = client.post("/orders/batch", json={"operations": [order("o1")]}, headers=h)
    assert again.headers["idempotent-replayed"] == "true" and again.content == good.content


def test_key_order_of_the_body_does_not_change_the_fingerprint(make_client):
    client, _ = make_client()
    h = {**A, "Idempotency-Key": "k", "Content-Type": "application/json"}
    first = client.post("/orders/batch", content=b'{"operations":[{"id":"o1","amount":5,"currency":"USD"}]}', headers=h)
    again = client.post("/orders/batch", content=b'{"operations":[{"currency":"USD","amount":5,"id":"o1"}]}', headers=h)
    assert first.status_code == 200 and again.headers.get("idempotent-replayed") == "true"


def test_in_flight_key_is_409_and_a_dead_claim_is_taken_over_after_its_lease(make_client):
    client, app = make_client(idempotency_lease_seconds=1)
    store = app.state.service.idempotency
    body = {"operations": [order("o1")]}
    fp = store.fingerprint("POST", "/orders/batch", body)
    claim = store.begin("bearer:client-a", "k", fp)  # a request whose process then died
    assert isinstance(claim, Claim)
    busy = client.post("/orders/batch", json=body, headers={**A, "Idempotency-Key": "k"})
    assert busy.status_code == 409 and busy.json()["error"] == "idempotency_key_in_use"
    assert busy.headers["retry-after"] == "1"
    time.sleep(1.1)
    taken = client.post("/orders/batch", json=body, headers={**A, "Idempotency-Key": "k"})
    assert taken.status_code == 200 and taken.json()["results"][0]["status"] == "ok"
    # The dead claimant can no longer complete: its token lost the row.
    with pytest.raises(LostClaim):
        with store.storage.transaction() as conn:
            store.complete(conn, claim, Stored(200, b"{}"))


def test_expired_key_is_a_new_key(make_client):
    client, app = make_client()
    app.state.service.idempotency.retention = 0.2
    h = {**A, "Idempotency-Key": "k"}
    client.post("/orders/batch", json={"operations": [order("o1")]}, headers=h)
    time.sleep(0.3)
    other = client.post("/orders/batch", json={"operations": [order("o2")]}, headers=h)
    assert other.status_code == 200 and other.json()["results"][0]["status"] == "ok"


def test_required_key(make_client):
    client, _ = make_client(idempotency_key_required=True)
    missing = client.post("/orders/batch", json={"operations": [order("o1")]}, headers=A)
    assert missing.status_code == 400 and missing.json()["error"] == "idempotency_key_required"
    two = client.post("/orders/batch", json={"operations": [order("o1")]},
                      headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert two.status_code == 400 and two.json()["error"] == "invalid_idempotency_key"


def test_atomic_failure_is_stored_and_replayed(make_client):
    client, _ = make_client()
    h = {**A, "Idempotency-Key": "k"}
    body = {"atomic": True, "operations": [order("o1"), order("o2", amount=-1)]}
    first = client.post("/orders/batch", json=body, headers=h)
    again = client.post("/orders/batch", json=body, headers=h)
    assert first.status_code == again.status_code == 422
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content


def test_single_endpoint_honours_the_key_with_its_location(make_client):
    client, _ = make_client()
    h = {**A, "Idempotency-Key": "k"}
    first = client.post("/orders", json=order("s1"), headers=h)
    again = client.post("/orders", json=order("s1"), headers=h)
    assert first.status_code == again.status_code == 201
    assert again.headers["location"] == "/orders/s1" and again.headers["idempotent-replayed"] == "true"
    reused = client.post("/orders", json=order("s2"), headers=h)
    assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"


def test_replayed_item_satisfies_a_dependency(make_client):
    client, _ = make_client()
    parent = order("p", idempotency_key="kp")
    first = client.post("/orders/batch", json={"operations": [parent]}, headers=A)
    assert first.json()["results"][0]["status"] == "ok"
    child = order("c", parent_id="p", depends_on=["p"], idempotency_key="kc")
    again = client.post("/orders/batch", json={"operations": [parent, child]}, headers=A)
    results = again.json()["results"]
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert results[0] == first.json()["results"][0]
    assert again.json()["summary"] == {"total": 2, "succeeded": 2, "failed": 0}


def test_item_keys_are_scoped_to_the_client(make_client):
    client, _ = make_client()
    item = order("o1", idempotency_key="k")
    client.post("/orders/batch", json={"operations": [item]}, headers=A)
    other = client.post("/orders/batch", json={"operations": [item]}, headers={"Authorization": "Bearer client-b"})
    assert other.json()["results"][0]["status"] == "ok"
    assert client.get("/orders/o1", headers={"Authorization": "Bearer client-b"}).status_code == 200
