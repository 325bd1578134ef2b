"""The reference server's own tests: every endpoint and error, atomic rollback, dependencies, limits."""
from __future__ import annotations

import ast
import importlib.util
import json
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema.validators import validator_for
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("reference_server") is None:  # a plain checkout, not installed
    sys.path.insert(0, str(ROOT))

from reference_server import Settings, create_app, start_in_thread



SCHEMAS = ROOT / "schemas"


def _registry() -> Registry:
    res = []
    for p in SCHEMAS.glob("*.json"):
        s = json.loads(p.read_text())
        res.append((s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)))
    return Registry().with_resources(res)


REGISTRY = _registry()


def conforms(doc: Any, schema_file: str, pointer: str = "") -> None:
    schema = json.loads((SCHEMAS / schema_file).read_text())
    if pointer:
        schema = {"$ref": schema["$id"] + "#" + pointer}
    validator = validator_for(json.loads((SCHEMAS / schema_file).read_text()))(schema, registry=REGISTRY)
    errors = [e.message for e in validator.iter_errors(doc)]
    assert not errors, errors


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request) -> Any:
    """The reference server on each storage backend (the same tests, the same guarantees)."""
    if request.param == "postgresql":
        return create_app(request.getfixturevalue("postgres").new_database())
    return create_app()


@pytest.fixture()
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {uuid.uuid4().hex}"}) as c:
        yield c


def uid(tag: str = "o") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def order(**kw: Any) -> dict[str, Any]:
    return {"id": uid(), "amount": 12.5, "currency": "USD", **kw}


def batch(client: TestClient, items: list[Any], **extra: Any) -> httpx.Response:
    return client.post("/orders/batch", json={"operations": items, **extra})


def results(resp: httpx.Response) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in resp.json()["results"]}


# -- single and read -----------------------------------------------------------------------------

def test_single_create_and_read(client: TestClient) -> None:
    item = order(note="hello", amount=99)
    resp = client.post("/orders", json=item)
    assert resp.status_code == 201
    body = resp.json()
    assert body == {**item, "version": 1, "created_at": body["created_at"]}
    conforms(body, "order.schema.json", "/$defs/stored")
    assert client.get(f"/orders/{item['id']}").json() == body
    assert isinstance(client.get(f"/orders/{item['id']}").json()["amount"], int)


def test_single_non_ascii_id(client: TestClient) -> None:
    item = order(id="заказ/✓ \U000a327e-" + uid())
    resp = client.post("/orders", json=item)
    assert resp.status_code == 201 and resp.json()["id"] == item["id"]
    assert client.get(resp.headers["location"]).json()["id"] == item["id"]


def test_single_errors(client: TestClient) -> None:
    item = order()
    assert client.post("/orders", json=item).status_code == 201
    resp = client.post("/orders", json=item)
    assert resp.status_code == 409 and resp.json()["error"] == "already_exists"
    for bad, code, field in [({"amount": -5}, "invalid_amount", "amount"),
                             ({"currency": "XXX"}, "invalid_currency", "currency"),
                             ({"colour": "red"}, "unknown_field", "colour"),
                             ({"parent_id": "nope-" + uid()}, "parent_not_found", "parent_id")]:
        resp = client.post("/orders", json=order(**bad))
        assert resp.status_code == (409 if code == "parent_not_found" else 422), resp.text
        body = resp.json()
        assert body["error"] == code and body["field"] == field and field in body["message"]
        conforms(body, "error.schema.json")
    missing = order()
    del missing["amount"]
    resp = client.post("/orders", json=missing)
    assert resp.status_code == 422 and resp.json()["error"] == "missing_field"
    assert resp.json()["field"] == "amount" and "amount" in resp.json()["message"]
    assert client.get(f"/orders/{missing['id']}").status_code == 404


def test_single_bad_bodies(client: TestClient) -> None:
    resp = client.post("/orders", content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"] == "malformed_json"
    resp = client.post("/orders", json=[1, 2])
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_body"
    resp = client.post("/orders", content=b"x", headers={"content-type": "text/plain"})
    assert resp.status_code == 415 and resp.json()["error"] == "unsupported_media_type"


def test_read_unknown_and_other_client(app: Any, client: TestClient) -> None:
    resp = client.get(f"/orders/{uid()}")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    item = order()
    assert client.post("/orders", json=item).status_code == 201
    with TestClient(app, headers={"Authorization": "Bearer someone-else"}) as other:
        assert other.get(f"/orders/{item['id']}").status_code == 404
        assert other.post("/orders", json=item).status_code == 201  # its own namespace
    with TestClient(app) as anonymous:
        assert anonymous.get(f"/orders/{item['id']}").status_code == 404


def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    resp = client.get("/no/such/route")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    for resp in (client.put("/orders/batch", json={}), client.delete("/orders/batch"), client.delete("/orders")):
        assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"


# -- batch -----------------------------------------------------------------------------------------

def test_mixed_batch(client: TestClient) -> None:
    good1, good2 = order(), order(currency="EUR", note="n")
    bad_amount, bad_currency, missing = order(amount=-5), order(currency="XXX"), order()
    del missing["amount"]
    unknown = order(extra=1)
    items = [good1, bad_amount, good2, bad_currency, missing, unknown]
    resp = batch(client, items)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    conforms(body, "batch-response.schema.json")
    assert [r["id"] for r in body["results"]] == [i["id"] for i in items]
    assert body["summary"] == {"total": 6, "succeeded": 2, "failed": 4}
    res = results(resp)
    expected = {bad_amount["id"]: ("invalid_amount", "amount"), bad_currency["id"]: ("invalid_currency", "currency"),
                missing["id"]: ("missing_field", "amount"), unknown["id"]: ("unknown_field", "extra")}
    for item_id, (code, field) in expected.items():
        err = res[item_id]["error"]
        assert res[item_id]["status"] == "error"
        assert err["code"] == code and err["field"] == field and field in err["message"]
        assert err["retryable"] is False
        assert client.get(f"/orders/{item_id}").status_code == 404
    for good in (good1, good2):
        assert res[good["id"]]["status"] == "ok"
        assert client.get(f"/orders/{good['id']}").json() == res[good["id"]]["data"]


def test_batch_data_matches_single(client: TestClient) -> None:
    for template in ({"amount": 12.5, "currency": "USD"}, {"amount": 99, "currency": "EUR", "note": "x"}):
        a, b = dict(template, id=uid()), dict(template, id=uid())
        single = client.post("/orders", json=a).json()
        data = results(batch(client, [b]))[b["id"]]["data"]
        assert list(single) == list(data)
        strip = ("id", "created_at")
        assert {k: v for k, v in single.items() if k not in strip} == {k: v for k, v in data.items() if k not in strip}
        assert client.get(f"/orders/{b['id']}").json() == data


def test_batch_item_codes_match_single(client: TestClient) -> None:
    for bad in (order(amount=-1), order(currency="XYZ"), order(amount="1")):
        single = client.post("/orders", json=bad).json()["error"]
        in_batch = next(iter(results(batch(client, [dict(bad, id=uid())])).values()))["error"]["code"]
        assert single == in_batch


def test_batch_existing_ids_and_resubmission(client: TestClient) -> None:
    good, bad = order(), order(amount=0)
    batch(client, [good, bad])
    fixed = dict(bad, amount=5)
    res = results(batch(client, [good, fixed]))
    assert res[good["id"]]["error"]["code"] == "already_exists"
    assert res[fixed["id"]]["status"] == "ok"
    assert client.get(f"/orders/{good['id']}").json()["version"] == 1


def test_idempotency_key_is_accepted(client: TestClient) -> None:
    item = order(idempotency_key="k-" + uid())
    assert results(batch(client, [item]))[item["id"]]["status"] == "ok"


@pytest.mark.parametrize(("body", "code"), [
    (b"{\"operations\": [", "malformed_json"),
    (b"", "malformed_json"),
    (b"NaN", "malformed_json"),
    (b"[" * 5000, "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    (b"[]", "invalid_body"),
    (b"\"operations\"", "invalid_body"),
    (b"null", "invalid_body"),
    (b"{}", "invalid_body"),
    (b"{\"operations\": {}}", "invalid_body"),
    (b"{\"operations\": null}", "invalid_body"),
    (b"{\"operations\": [1]}", "invalid_body"),
    (b"{\"operations\": [null]}", "invalid_body"),
    (b"{\"operations\": [{\"amount\": 1}]}", "invalid_body"),
    (b"{\"operations\": [{\"id\": 7}]}", "invalid_body"),
    (b"{\"operations\": [], \"atomic\": \"yes\"}", "invalid_body"),
    (b"{\"operations\": []}", "batch_empty"),
])
def test_batch_level_400(client: TestClient, body: bytes, code: str) -> None:
    resp = client.post("/orders/batch", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == code and resp.json()["message"]
    conforms(resp.json(), "error.schema.json")


def test_hostile_values_are_per_item_errors(client: TestClient) -> None:
    items = [order(amount=1e308), order(id="x" * 201), order(id="ünïcødé-✓-" + uid()),
             order(amount=10**30), order(note="n" * 2001), order(amount=[1]), order(currency=None)]
    resp = batch(client, items)
    assert resp.status_code == 200
    codes = [r["error"]["code"] if r["status"] == "error" else "ok" for r in resp.json()["results"]]
    assert codes == ["invalid_amount", "invalid_id", "ok", "invalid_amount", "invalid_note",
                     "invalid_amount", "invalid_currency"]


def test_ids_with_nul_characters(client: TestClient) -> None:
    plain = uid()
    tricky = order(id="\u0000" + plain)
    first = results(batch(client, [order(id=plain), tricky]))
    assert all(r["status"] == "ok" for r in first.values())
    again = results(batch(client, [dict(tricky)]))
    assert again[tricky["id"]]["error"]["code"] == "already_exists"


def test_duplicate_ids_rejected_nothing_applied(client: TestClient) -> None:
    a, b = order(), order()
    resp = batch(client, [a, b, dict(a), dict(b)])
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "duplicate_id" and a["id"] in body["message"] and body["ids"] == [a["id"], b["id"]]
    assert client.get(f"/orders/{a['id']}").status_code == 404
    assert client.get(f"/orders/{b['id']}").status_code == 404


def test_batch_size_limits(client: TestClient) -> None:
    too_many = [order() for _ in range(1001)]
    resp = batch(client, too_many)
    assert resp.status_code == 413
    assert resp.json()["error"] == "batch_too_large"
    assert resp.json()["message"] == "Maximum 1000 items per batch; received 1001"
    assert client.get(f"/orders/{too_many[0]['id']}").status_code == 404
    exactly = too_many[:1000]
    resp = batch(client, exactly)
    assert resp.status_code == 200 and resp.json()["summary"]["succeeded"] == 1000
    resp = batch(client, [order() for _ in range(101)], atomic=True)
    assert resp.status_code == 413 and resp.json()["message"] == "Maximum 100 items per batch; received 101"
    assert batch(client, [order() for _ in range(100)], atomic=True).status_code == 200


def test_unsupported_media_type(client: TestClient) -> None:
    body = json.dumps({"operations": [order()]})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        resp = client.post("/orders/batch", content=body, headers={"content-type": ctype})
        assert resp.status_code == 415 and resp.json()["error"] == "unsupported_media_type"
    resp = client.post("/orders/batch", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert resp.status_code == 200


def test_content_length_over_limit_refused(client: TestClient) -> None:
    resp = client.post("/orders/batch", content=b" " * (1048576 + 1), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


def test_small_byte_limit_setting() -> None:
    with TestClient(create_app(settings=Settings(max_bytes=100))) as c:
        resp = c.post("/orders/batch", json={"operations": [order(note="n" * 200)]})
        assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


# -- atomic ----------------------------------------------------------------------------------------

def test_atomic_failure_rolls_back(client: TestClient) -> None:
    good1, bad, good2 = order(), order(currency="XXX"), order()
    resp = batch(client, [good1, bad, good2], atomic=True)
    assert resp.status_code == 422
    body = resp.json()
    conforms(body, "batch-response.schema.json")
    assert body["status"] == "failed" and body["error"]["code"] == "atomic_batch_failed"
    res = results(resp)
    assert [r["id"] for r in body["results"]] == [good1["id"], bad["id"], good2["id"]]
    assert res[bad["id"]]["error"]["code"] == "invalid_currency"
    for good in (good1, good2):
        assert res[good["id"]]["status"] == "error" and res[good["id"]]["error"]["code"] == "not_applied"
        assert client.get(f"/orders/{good['id']}").status_code == 404


def test_atomic_failure_from_conflict_rolls_back(client: TestClient) -> None:
    existing = order()
    assert client.post("/orders", json=existing).status_code == 201
    fresh = order()
    resp = batch(client, [fresh, existing], atomic=True)
    assert resp.status_code == 422
    assert results(resp)[existing["id"]]["error"]["code"] == "already_exists"
    assert client.get(f"/orders/{fresh['id']}").status_code == 404


def test_atomic_success(client: TestClient) -> None:
    items = [order(), order(), order()]
    resp = batch(client, items, atomic=True)
    assert resp.status_code == 200
    assert all(r["status"] == "ok" for r in resp.json()["results"])
    for item in items:
        assert client.get(f"/orders/{item['id']}").status_code == 200


# -- dependencies ----------------------------------------------------------------------------------

def test_dependency_runs_first(client: TestClient) -> None:
    parent = order()
    child = order(parent_id=parent["id"], depends_on=[parent["id"]])
    resp = batch(client, [child, parent])
    assert [r["id"] for r in resp.json()["results"]] == [child["id"], parent["id"]]
    res = results(resp)
    assert res[child["id"]]["status"] == "ok", res
    assert res[child["id"]]["data"]["parent_id"] == parent["id"]
    assert client.get(f"/orders/{child['id']}").json()["parent_id"] == parent["id"]


def test_without_depends_on_request_order_is_kept(client: TestClient) -> None:
    parent = order()
    child = order(parent_id=parent["id"])
    res = results(batch(client, [child, parent]))
    assert res[child["id"]]["error"]["code"] == "parent_not_found"
    assert res[parent["id"]]["status"] == "ok"


def test_dependency_failed(client: TestClient) -> None:
    parent = order(amount=-1)
    child = order(parent_id=parent["id"], depends_on=[parent["id"]])
    grandchild = order(depends_on=[child["id"]])
    other = order()
    res = results(batch(client, [grandchild, child, parent, other]))
    err = res[child["id"]]["error"]
    assert err["code"] == "dependency_failed" and parent["id"] in err["message"] and err["dependency"] == parent["id"]
    assert res[grandchild["id"]]["error"]["code"] == "dependency_failed"
    assert res[grandchild["id"]]["error"]["dependency"] == child["id"]
    assert res[other["id"]]["status"] == "ok"
    for item in (parent, child, grandchild):
        assert client.get(f"/orders/{item['id']}").status_code == 404


def test_unknown_dependency(client: TestClient) -> None:
    ghost = uid("ghost")
    item = order(depends_on=[ghost])
    res = results(batch(client, [item, order()]))
    err = res[item["id"]]["error"]
    assert err["code"] == "unknown_dependency" and ghost in err["message"]
    assert client.get(f"/orders/{item['id']}").status_code == 404


def test_dependency_cycle(client: TestClient) -> None:
    a, b, c = order(), order(), order()
    a["depends_on"], b["depends_on"], c["depends_on"] = [b["id"]], [c["id"]], [a["id"]]
    selfish = order()
    selfish["depends_on"] = [selfish["id"]]
    downstream = order(depends_on=[a["id"]])
    free = order()
    t0 = time.monotonic()
    resp = batch(client, [a, b, c, selfish, downstream, free])
    assert time.monotonic() - t0 < 5
    assert resp.status_code == 200
    res = results(resp)
    for item in (a, b, c, selfish):
        assert res[item["id"]]["error"]["code"] == "dependency_cycle"
    assert res[downstream["id"]]["error"]["code"] == "dependency_failed"
    assert res[free["id"]]["status"] == "ok"


def test_long_dependency_chain(client: TestClient) -> None:
    ids = [uid() for _ in range(1000)]
    items = [{"id": ids[i], "amount": 1, "currency": "GBP",
              **({"depends_on": [ids[i + 1]], "parent_id": ids[i + 1]} if i + 1 < len(ids) else {})}
             for i in range(len(ids))]
    resp = batch(client, items)
    assert resp.json()["summary"]["succeeded"] == 1000


def test_atomic_with_dependencies(client: TestClient) -> None:
    parent = order()
    child = order(parent_id=parent["id"], depends_on=[parent["id"]])
    assert batch(client, [child, parent], atomic=True).status_code == 200


# -- OpenAPI -----------------------------------------------------------------------------------------

def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_openapi(client: TestClient) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    post = doc["paths"]["/orders/batch"]["post"]
    assert "x-batch-atomic" in post
    request_schema = _resolve(doc, post["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert request_schema["properties"]["operations"]["maxItems"] == 1000
    assert "atomic" in request_schema["properties"]
    for status in ("200", "400", "413", "415", "422"):
        assert status in post["responses"]
    assert "1000" in post["description"] and "1048576" in post["description"]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                _resolve(doc, node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    for schema in doc["components"]["schemas"].values():
        validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"}).check_schema(schema)


# -- over a real socket ---------------------------------------------------------------------------------

def test_chunked_50mib_body_refused_early_and_server_survives() -> None:
    server = start_in_thread()
    try:
        sent = 0

        def body() -> Iterator[bytes]:
            nonlocal sent
            chunk = b" " * 65536
            for _ in range(50 * 16):  # 50 MiB
                sent += len(chunk)
                yield chunk

        t0 = time.monotonic()
        resp = httpx.post(server.base_url + "/orders/batch", content=body(),
                          headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 413
        assert resp.json()["error"] == "payload_too_large"
        assert sent < 16 * 1048576, f"{sent} bytes were sent before the refusal"
        assert time.monotonic() - t0 < 10
        item = order()
        ok = httpx.post(server.base_url + "/orders/batch", json={"operations": [item]}, timeout=10)
        assert ok.status_code == 200 and ok.json()["results"][0]["status"] == "ok"
        assert httpx.get(f"{server.base_url}/orders/{item['id']}", timeout=10).status_code == 200
    finally:
        server.stop()
    assert not server.thread.is_alive()


def test_shared_db_file_across_apps(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    item = order()
    with TestClient(create_app(db)) as first:
        assert first.post("/orders", json=item).status_code == 201
    with TestClient(create_app(db)) as second:
        assert second.get(f"/orders/{item['id']}").status_code == 200


def test_reference_server_never_imports_conformance() -> None:
    for path in (ROOT / "reference_server").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "conformance" for n in names), path
