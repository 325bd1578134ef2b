"""The batch engine: parse a batch envelope, and apply a batch inside a given transaction.

``apply_batch`` is the seam: it takes an open transaction (``Storage.transaction()``), does one
look-up of every id it needs, decides every item in dependency order, and inserts the accepted
items with one ``executemany``. It returns the per-item results in request order. Idempotency
(stored in the same transaction) and async jobs (which call it per chunk) build on it.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from . import errors as E
from .dependencies import dependencies_of, plan
from .errors import ApiError, item_error
from .settings import Settings
from .storage import Order, existing_ids, insert_orders, new_order

Item = dict[str, Any]
Result = dict[str, Any]
Check = Callable[[Item], "dict[str, Any] | None"]


@dataclass
class BatchRequest:
    items: list[Item]
    atomic: bool = False
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    results: list[Result]
    """One result per item, in request order."""
    succeeded: int
    failed: int
    applied: bool = True
    """False when an atomic batch failed and nothing was written."""

    def summary(self) -> dict[str, int]:
        return {"total": len(self.results), "succeeded": self.succeeded, "failed": self.failed}

    def body(self) -> dict[str, Any]:
        """The response body: processed batch, or the atomic failure shape."""
        if self.applied:
            return {"results": self.results, "summary": self.summary()}
        return {
            "status": "failed",
            "error": {"code": E.ATOMIC_BATCH_FAILED,
                      "message": f"atomic batch not applied: {self.failed} of {len(self.results)} "
                                 "items failed; no item was applied"},
            "results": self.results,
            "summary": self.summary(),
        }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_json(body: bytes) -> Any:
    """Parse a request body with orjson; ``malformed_json`` (400) when it is not JSON."""
    if not body.strip():
        raise ApiError(400, E.MALFORMED_JSON, "request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, E.MALFORMED_JSON, f"request body is not valid JSON: {exc}") from None


def parse_batch(body: bytes, settings: Settings, *, max_items: int | None = None) -> BatchRequest:
    """Check the batch envelope; raise the batch-level ``ApiError`` when it is not acceptable."""
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise ApiError(400, E.INVALID_BODY,
                       f"request body must be a JSON object with an 'operations' array, not {_kind(doc)}")
    if "operations" not in doc:
        raise ApiError(400, E.INVALID_BODY, "request body has no 'operations' member (an array of items)",
                       field="operations")
    ops = doc["operations"]
    if not isinstance(ops, list):
        raise ApiError(400, E.INVALID_BODY, f"'operations' must be an array of items, not {_kind(ops)}",
                       field="operations")
    atomic = doc.get("atomic", False)
    if not isinstance(atomic, bool):
        raise ApiError(400, E.INVALID_BODY, f"'atomic' must be a boolean, not {_kind(atomic)}", field="atomic")
    if not ops:
        raise ApiError(400, E.BATCH_EMPTY, "the batch has no operations; send at least one item")
    limit = max_items if max_items is not None else (settings.atomic_max_items if atomic else settings.max_items)
    if len(ops) > limit:
        raise ApiError(413, E.BATCH_TOO_LARGE, f"Maximum {limit} items per batch; received {len(ops)}",
                       max_items=limit, received=len(ops), atomic=atomic)
    seen: set[str] = set()
    duplicates: list[str] = []
    for i, item in enumerate(ops):
        if not isinstance(item, dict):
            raise ApiError(400, E.INVALID_BODY, f"operations[{i}] must be an object, not {_kind(item)}", index=i)
        item_id = item.get("id")
        if not isinstance(item_id, str):
            what = "has no 'id'" if item_id is None else f"has an 'id' that is {_kind(item_id)}, not a string"
            raise ApiError(400, E.INVALID_BODY, f"operations[{i}] {what}; every item needs a string id",
                           index=i, field="id")
        if item_id in seen:
            if item_id not in duplicates:
                duplicates.append(item_id)
        else:
            seen.add(item_id)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:20])
        more = f" and {len(duplicates) - 20} more" if len(duplicates) > 20 else ""
        raise ApiError(400, E.DUPLICATE_ID,
                       f"duplicate item ids in one batch: {shown}{more}; nothing was applied", ids=duplicates)
    return BatchRequest(items=ops, atomic=atomic, raw=doc)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def decide(items: list[Item], check: Check, existing: set[str], created_at: str
           ) -> tuple[list[Result], list[Order]]:
    """Decide every item (pure): results in request order and the orders to insert, in apply order."""
    ids = [item["id"] for item in items]
    depends = [dependencies_of(item) for item in items]
    schedule = plan(ids, depends)
    results: list[Result | None] = [None] * len(items)
    created: set[str] = set()
    to_insert: list[Order] = []
    for i in schedule.order:
        item = items[i]
        item_id = ids[i]
        err = check(item)
        if err is None:
            err = _dependency_error(i, ids, schedule, created)
        if err is None and item_id in existing:
            err = item_error(E.ALREADY_EXISTS, f"an order with id '{item_id}' already exists", "id")
        if err is None:
            parent = item.get("parent_id")
            if parent is not None and parent not in existing and parent not in created:
                err = item_error(E.PARENT_NOT_FOUND,
                                 f"parent_id '{parent}' names no existing order", "parent_id")
        if err is None:
            order = new_order(item, created_at)
            created.add(item_id)
            to_insert.append(order)
            results[i] = {"id": item_id, "status": "ok", "data": order}
        else:
            results[i] = {"id": item_id, "status": "error", "error": err}
    return [r for r in results if r is not None], to_insert


def _dependency_error(i: int, ids: list[str], schedule: Any, created: set[str]) -> dict[str, Any] | None:
    if i in schedule.unknown:
        dep = schedule.unknown[i]
        return item_error(E.UNKNOWN_DEPENDENCY,
                          f"depends_on names '{dep}', which is not an item of this batch", "depends_on",
                          dependency=dep)
    if i in schedule.cycles:
        cycle = schedule.cycles[i]
        return item_error(E.DEPENDENCY_CYCLE,
                          f"depends_on forms a cycle between items {', '.join(repr(c) for c in cycle)}",
                          "depends_on", cycle=cycle)
    for j in schedule.deps[i]:
        if ids[j] not in created:
            return item_error(E.DEPENDENCY_FAILED,
                              f"dependency '{ids[j]}' failed, so this item was not applied", "depends_on",
                              retryable=True, dependency=ids[j])
    return None


def apply_batch(conn: sqlite3.Connection, client: str, items: list[Item], check: Check, *,
                atomic: bool = False, created_at: str | None = None) -> BatchOutcome:
    """Apply ``items`` of ``client`` inside the caller's open transaction ``conn``.

    One query reads every id and parent id the batch names; every item is decided in dependency
    order; the accepted ones are inserted with one ``executemany``. In atomic mode, if any item
    fails nothing is inserted and every other item is reported ``not_applied``.
    """
    wanted = {item["id"] for item in items}
    wanted.update(p for item in items if isinstance(p := item.get("parent_id"), str))
    existing = existing_ids(conn, client, wanted)
    results, to_insert = decide(items, check, existing, created_at or now_iso())
    failed = len(results) - len(to_insert)
    if atomic and failed:
        for k, result in enumerate(results):
            if result["status"] == "ok":
                results[k] = {"id": result["id"], "status": "error", "error": item_error(
                    E.NOT_APPLIED, "not applied: the atomic batch failed because of other items",
                    retryable=True)}
        return BatchOutcome(results=results, succeeded=0, failed=len(results), applied=False)
    insert_orders(conn, client, to_insert)
    return BatchOutcome(results=results, succeeded=len(to_insert), failed=failed)
