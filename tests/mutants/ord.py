"""Mutants of class ORD: result correlation and `depends_on` between items of one batch.

Several of them put a dependency layer of their own in front of the reference server (the way many
real servers grow one): it decides the order and the dependency failures, and sends each item to
the inner app as a batch of one, without its `depends_on`. Each knob of `DependencyLayer` is a bug.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._base import Call, Rewrite, mutant, on_openapi, variation

PATH = "/orders/batch"
DEP = "depends_on"


def _dependency_batch(doc: Any) -> list[dict[str, Any]] | None:
    """The items of a well-formed, non-atomic batch that uses depends_on; None otherwise (passed through)."""
    if not isinstance(doc, dict) or doc.get("atomic") or not isinstance(doc.get("operations"), list):
        return None
    ops = doc["operations"]
    if not ops or not all(isinstance(o, dict) and isinstance(o.get("id"), str) for o in ops):
        return None
    if len({o["id"] for o in ops}) != len(ops) or not any(o.get(DEP) for o in ops):
        return None
    return ops


def _error(item_id: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "status": "error", "error": {"code": code, "message": message, **extra}}


def _receive_once(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI receive that gives the whole `body` once, then waits (the client never disconnects)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await anyio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _call_inner(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, Any]:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    receive = _receive_once(body)
    status, parts = 0, []

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
        elif msg["type"] == "http.response.body":
            parts.append(msg.get("body", b""))

    await app(dict(scope, headers=headers), receive, send)
    return status, json.loads(b"".join(parts) or b"null")


async def _respond(send: Any, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class DependencyLayer:
    """A dependency resolver in front of the inner app. Correct with the defaults; each knob is a bug:
    order="request" (no topological sort), propagate=False (a failed dependency does not fail its
    dependents), cycle="hang" (waits for dependencies that never complete) or "crash" (500)."""

    def __init__(self, app: Any, *, order: str = "topological", propagate: bool = True, cycle: str = "error"):
        self.app = app
        self.router = getattr(app, "router", None)
        self.order, self.propagate, self.cycle = order, propagate, cycle

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        try:
            ops = _dependency_batch(json.loads(body))
        except (ValueError, RecursionError):  # not JSON, or hostile nesting: the inner app answers it
            ops = None
        if ops is None:  # passed through whole: the inner app's own status, headers and body
            await self.app(scope, _receive_once(body), send)
            return
        schedule, cyclic = self._schedule(ops)
        if cyclic and self.cycle == "hang":
            await anyio.sleep_forever()
        if cyclic and self.cycle == "crash":
            await _respond(send, 500, {"error": "internal_error", "message": "internal server error"})
            return
        ids = {o["id"] for o in ops}
        results: dict[str, dict[str, Any]] = {}
        for k in schedule:
            item = ops[k]
            results[item["id"]] = await self._one(scope, item, ids, results, cyclic)
        out = [results[o["id"]] for o in ops]
        ok = sum(1 for r in out if r.get("status") == "ok")
        await _respond(send, 200, {"results": out, "summary": {"total": len(out), "succeeded": ok,
                                                               "failed": len(out) - ok}})

    def _schedule(self, ops: list[dict[str, Any]]) -> tuple[list[int], set[str]]:
        if self.order == "request":
            return list(range(len(ops))), set()
        index = {o["id"]: k for k, o in enumerate(ops)}
        pending = {k: {index[d] for d in ops[k].get(DEP) or [] if d in index} for k in range(len(ops))}
        done: list[int] = []
        while True:
            ready = sorted(k for k, deps in pending.items() if not deps)
            if not ready:
                break
            for k in ready:
                done.append(k)
                del pending[k]
            for deps in pending.values():
                deps.difference_update(ready)
        return done + sorted(pending), {ops[k]["id"] for k in pending}

    async def _one(self, scope, item, ids, results, cyclic) -> dict[str, Any]:
        item_id = item["id"]
        deps = [d for d in item.get(DEP) or [] if isinstance(d, str)]
        unknown = [d for d in deps if d not in ids]
        if unknown:
            return _error(item_id, "unknown_dependency", f"depends_on names '{unknown[0]}', not in this batch")
        if item_id in cyclic:
            return _error(item_id, "dependency_cycle", "depends_on forms a cycle")
        failed = [d for d in deps if results.get(d, {}).get("status") != "ok"]
        if failed and self.propagate:
            return _error(item_id, "dependency_failed", f"dependency '{failed[0]}' failed", dependency=failed[0])
        single = {k: v for k, v in item.items() if k != DEP}
        status, doc = await _call_inner(self.app, scope, json.dumps({"operations": [single]}).encode())
        if status != 200:
            return _error(item_id, "internal_error", f"inner answer {status}")
        return doc["results"][0]


@variation("dependencies resolved by a layer of its own that sends items one by one (correct)", classes=["ORD"])
def dependency_layer_correct(app):
    return DependencyLayer(app)


@mutant("ORD-02", "depends_on is checked but not used for ordering: items run in request order, so a "
                  "dependent listed first fails as if its dependency had failed",
        check="test_dependent_runs_after_its_dependency")
def dependencies_in_request_order(app):
    return DependencyLayer(app, order="request")


@mutant("ORD-03", "a dependent item is applied although its dependency failed (order honoured, failure "
                  "not propagated)", check="test_failed_dependency_fails_dependents")
def failure_not_propagated(app):
    return DependencyLayer(app, propagate=False)


# A short request timeout keeps the kit's own test fast; the hang is caught the same way at any timeout.
@mutant("ORD-04", "a dependency cycle makes the server wait forever for dependencies that never complete",
        profile={"target": {"timeout": 2}}, check="test_cycle_gets_clear_error")
def cycle_hangs(app):
    return DependencyLayer(app, cycle="hang")


@mutant("ORD-04", "a dependency cycle crashes the resolver: 500", check="test_cycle_gets_clear_error")
def cycle_crashes(app):
    return DependencyLayer(app, cycle="crash")


@mutant("ORD-04", "depends_on entries naming no item of the batch are silently dropped: the item is applied",
        check="test_unknown_dependency_gets_clear_error")
def unknown_dependency_dropped(app):
    def req(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if not isinstance(ops, list):
            return
        ids = {o.get("id") for o in ops if isinstance(o, dict)}
        for o in ops:
            if isinstance(o, dict) and isinstance(o.get(DEP), list):
                o[DEP] = [d for d in o[DEP] if d in ids]
        call.set_json(doc)
    return Rewrite(app, path=PATH, request=req)


def _rewrite_dependencies(app: Any, change: Callable[[dict[str, Any]], list[Any] | None]) -> Rewrite:
    """Rewrite each item's depends_on list before the server sees it (`change` returns the new list, or
    None to leave it)."""
    def req(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        changed = False
        for o in ops if isinstance(ops, list) else []:
            if isinstance(o, dict) and isinstance(o.get(DEP), list):
                new = change(o)
                if new is not None:
                    o[DEP], changed = new, True
        if changed:
            call.set_json(doc)
    return Rewrite(app, path=PATH, request=req)


@mutant("ORD-02", "depends_on is modelled as a single parent: only its first id is honoured (ordering and "
                  "failure propagation), the others are ignored", also=["ORD-03"],
        check="test_dependent_runs_after_every_dependency")
def first_dependency_only(app):
    return _rewrite_dependencies(app, lambda o: o[DEP][:1] if len(o[DEP]) > 1 else None)


@mutant("ORD-04", "the cycle check skips self-references: an item depending on itself has that entry dropped "
                  "and is applied", check="test_cycle_gets_clear_error")
def self_dependency_ignored(app):
    return _rewrite_dependencies(app, lambda o: [d for d in o[DEP] if d != o.get("id")] if o.get("id") in o[DEP]
                                 else None)


@mutant("ORD-03", "dependency_failed does not say which dependency failed",
        check="test_failed_dependency_fails_dependents")
def dependency_failed_unnamed(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.status != 200 or not isinstance(doc, dict):
            return
        for r in doc.get("results") or []:
            err = r.get("error")
            if isinstance(err, dict) and err.get("code") == "dependency_failed":
                err["message"] = "a dependency of this item failed, so it was not applied"
                err.pop("dependency", None)
        call.set_response_json(doc)
    return Rewrite(app, path=PATH, response=resp)


def _independent(call: Call) -> bool:
    doc = call.json()
    ops = doc.get("operations") if isinstance(doc, dict) else None
    return isinstance(ops, list) and not any(isinstance(o, dict) and o.get(DEP) for o in ops)


# PAR-01: its multi-item batch holds every item template, so rotated data differ from the single
# endpoint's answers (a cascade seen in the full matrix).
@mutant("ORD-01", "independent items run in parallel; ok results' data are listed in completion order "
                  "under the request's ids", also=["IDEM-06", "PAR-01"],
        check="test_independent_items_correlated_by_id")
def ok_data_in_completion_order(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.status != 200 or not isinstance(doc, dict) or not _independent(call):
            return
        oks = [r for r in doc.get("results") or [] if r.get("status") == "ok"]
        datas = [r["data"] for r in oks]
        for r, d in zip(oks, datas[1:] + datas[:1]):
            r["data"] = d
        call.set_response_json(doc)
    return Rewrite(app, path=PATH, response=resp)


@mutant("ORD-01", "independent items run in parallel; results come back in completion order but are "
                  "labelled with the request's ids by position",
        # PAR-02's large-batch check reads CORE's 1,000-item batch by id: each invalid item's id now labels
        # its neighbour's result, so its code differs from the single endpoint's (every batch of 4+ items).
        also=["CORE-03", "PART-03", "PART-04", "ROB-02", "PAR-02"],
        check="test_independent_items_correlated_by_id")
def results_labelled_by_position(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.status != 200 or not isinstance(doc, dict) or not _independent(call):
            return
        res = doc.get("results") or []
        if len(res) < 4:
            return  # small batches finish in order
        ids = [r.get("id") for r in res]
        shuffled = res[1:] + res[:1]
        for r, i in zip(shuffled, ids):
            r["id"] = i
        doc["results"] = shuffled
        call.set_response_json(doc)
    return Rewrite(app, path=PATH, response=resp)


@variation("independent items run in parallel, results in completion order, correlated by id", classes=["ORD"],
           warns=["CORE-05"])
def completion_order_correlated(app):
    def resp(call: Call) -> None:
        doc = call.response_json()
        if call.status == 200 and isinstance(doc, dict) and isinstance(doc.get("results"), list):
            doc["results"] = doc["results"][1:] + doc["results"][:1]
            call.set_response_json(doc)
    return Rewrite(app, path=PATH, response=resp)


@mutant("ORD-01", "processing is memoised by payload (the item without its id): items of one batch with the same "
                  "payload all get the first one's result data, whose id names that first item; every item "
                  "is stored correctly",
        check="test_independent_items_correlated_by_id")
def results_memoised_by_payload(app):
    def req(call: Call) -> None:
        doc = call.json()
        ops = doc.get("operations") if isinstance(doc, dict) else None
        if isinstance(ops, list):
            call.state["ops"] = {o.get("id"): o for o in ops if isinstance(o, dict)}

    def resp(call: Call) -> None:
        doc = call.response_json()
        ops = call.state.get("ops")
        if not ops or not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            return
        memo: dict[str, Any] = {}
        for r in doc["results"]:
            if not isinstance(r, dict) or r.get("status") != "ok" or r.get("id") not in ops:
                continue
            payload = json.dumps({k: v for k, v in ops[r["id"]].items() if k != "id"}, sort_keys=True)
            r["data"] = memo.setdefault(payload, r.get("data"))  # the cached answer of an identical payload
        call.set_response_json(doc)
    return Rewrite(app, path=PATH, request=req, response=resp)


def _money_as_text(doc: Any) -> None:
    """An order's numeric `amount` as the decimal string the API stores ("12.50" for 12.5)."""
    if isinstance(doc, dict) and isinstance(doc.get("amount"), (int, float)) and not isinstance(doc["amount"], bool):
        doc["amount"] = f"{doc['amount']:.2f}"


@variation("money is stored and answered as a decimal string (\"12.50\" for 12.5) in batch results, job results, "
           "single answers and reads alike, correlated by id", classes=["ORD"])
def money_as_decimal_strings(app):
    def results(call: Call) -> None:
        doc = call.response_json()
        if isinstance(doc, dict) and isinstance(doc.get("results"), list):
            for r in doc["results"]:
                if isinstance(r, dict) and r.get("status") == "ok":
                    _money_as_text(r.get("data"))
            call.set_response_json(doc)

    def resource(call: Call) -> None:
        doc = call.response_json()
        if 200 <= call.status < 300 and isinstance(doc, dict):
            _money_as_text(doc)
            call.set_response_json(doc)
    def documented(doc: dict[str, Any]) -> None:  # the stored order's amount, as the API documents it
        stored = doc.get("components", {}).get("schemas", {}).get("Order", {}).get("$defs", {}).get("stored", {})
        if isinstance(stored.get("properties"), dict):
            stored["properties"]["amount"] = {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$",
                                              "description": "the amount as a decimal string, two places"}
    inner = on_openapi(documented)(app)
    inner = Rewrite(inner, method="POST", path=PATH, response=results)
    inner = Rewrite(inner, method="GET", path=lambda p: p.startswith("/imports/batch/"), response=results)
    inner = Rewrite(inner, method="POST", path="/orders", response=resource)
    return Rewrite(inner, method="GET", path=lambda p: p.startswith("/orders/") and p != PATH, response=resource)
