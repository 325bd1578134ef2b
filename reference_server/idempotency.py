"""Idempotency keys of the reference server: batch keys (a header) and item keys (a field of each item).

Batch keys (IETF httpapi Idempotency-Key draft semantics), scoped to the client credential:

- the first request with a key claims it (a short ``BEGIN IMMEDIATE`` transaction writes an
  ``in_flight`` row), then runs in its own transaction, which also stores the response (status,
  headers, body) with the fingerprint and turns the row ``done``: effects and record commit together;
- the same key and the same body (canonical JSON, and the same method and path) replays the stored
  response with ``Idempotent-Replayed: true`` and applies nothing;
- the same key with another body is 422 ``idempotency_key_reused``; a key whose first request is
  still running is 409 ``idempotency_key_in_use`` (with ``Retry-After``);
- an empty key, a key over 255 characters, or two key headers are 400 ``invalid_idempotency_key``;
- a request refused before it ran (malformed body, too large, ...) or one that crashed releases its
  claim: nothing is remembered, so the corrected retry runs;
- keys are kept ``Settings.idempotency_retention_seconds`` (24 hours); a claim whose process died is
  taken over after ``Settings.idempotency_lease_seconds``; a taken-over claim can no longer commit
  (the row carries the claimant's token), so even a very slow first request never applies twice.

Item keys (``idempotency_key`` of an item): a succeeded item's key is stored with the item's
fingerprint and its result, in the batch's transaction. A retried item whose key succeeded before
gets its original result and is not applied again; a key that failed before is not stored, so the
item is attempted again; a reused key with another payload gets a per-item ``idempotency_key_reused``;
the same key twice in one batch is 400 ``duplicate_idempotency_key`` before anything is applied.
Every look-up is one query per 500 keys, never a round trip per item.

Both work across worker processes and instances sharing the database: the claim and the batch are
write transactions, which SQLite serialises between processes; on PostgreSQL the claim takes an
advisory lock on the key and the batch its client's write lock (``storage.lock``).
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import Response

from .batch import BatchOutcome, Check, Item, Result, apply_batch
from .errors import JSON_TYPE, ApiError, item_error
from .settings import Settings
from .storage import Storage, lock

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
ITEM_FIELD = "idempotency_key"
MAX_KEY_LENGTH = 255

INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
IDEMPOTENCY_KEY_REQUIRED = "idempotency_key_required"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
DUPLICATE_IDEMPOTENCY_KEY = "duplicate_idempotency_key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    client      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state       TEXT NOT NULL,      -- 'in_flight' while the first request runs, then 'done'
    token       TEXT NOT NULL,      -- the claimant: a taken-over claim can no longer complete
    status      INTEGER,
    headers     BLOB,               -- JSON object of the response headers worth replaying
    body        BLOB,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,      -- end of the lease while in flight, end of retention once done
    PRIMARY KEY (client, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE TABLE IF NOT EXISTS item_idempotency_keys (
    client      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result      BLOB NOT NULL,      -- the original ok result, JSON
    expires_at  REAL NOT NULL,
    PRIMARY KEY (client, key)
);
CREATE INDEX IF NOT EXISTS item_idempotency_keys_expiry ON item_idempotency_keys (expires_at);
"""

_SELECT_KEY = ("SELECT fingerprint, state, status, headers, body, expires_at FROM idempotency_keys "
               "WHERE client = ? AND key = ?")
# Upserts (SQLite >= 3.24 and PostgreSQL alike), not SQLite's INSERT OR REPLACE.
_CLAIM = ("INSERT INTO idempotency_keys (client, key, fingerprint, state, token, created_at, expires_at) "
          "VALUES (?, ?, ?, 'in_flight', ?, ?, ?) ON CONFLICT (client, key) DO UPDATE SET "
          "fingerprint = excluded.fingerprint, state = excluded.state, token = excluded.token, status = NULL, "
          "headers = NULL, body = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at")
_COMPLETE = ("UPDATE idempotency_keys SET state = 'done', status = ?, headers = ?, body = ?, expires_at = ? "
             "WHERE client = ? AND key = ? AND token = ? AND state = 'in_flight'")
_RELEASE = "DELETE FROM idempotency_keys WHERE client = ? AND key = ? AND token = ? AND state = 'in_flight'"
_SELECT_ITEM_KEYS = ("SELECT key, fingerprint, result FROM item_idempotency_keys "
                     "WHERE client = ? AND expires_at > ? AND key IN ({marks})")
_REMEMBER_ITEMS = ("INSERT INTO item_idempotency_keys (client, key, fingerprint, result, expires_at) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client, key) DO UPDATE SET "
                   "fingerprint = excluded.fingerprint, result = excluded.result, expires_at = excluded.expires_at")
_PURGE = ("DELETE FROM idempotency_keys WHERE expires_at < ?",
          "DELETE FROM item_idempotency_keys WHERE expires_at < ?")
_LOOKUP_CHUNK = 500
_PURGE_EVERY_S = 60.0


@dataclass
class Stored:
    """A response as stored under a key (and as returned by ``IdempotencyStore.once``)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False

    def response(self, replayed_header: str = REPLAYED_HEADER) -> Response:
        headers = dict(self.headers)
        if self.replayed:
            headers[replayed_header] = "true"
        return Response(self.body, status_code=self.status, headers=headers, media_type=JSON_TYPE)


def json_response(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Stored:
    """A fresh (not replayed) JSON response, rendered once so the same bytes are stored and sent."""
    return Stored(status, orjson.dumps(doc), dict(headers or {}))


@dataclass
class Claim:
    """A key held by the request now running (the ``in_flight`` row carries ``token``)."""

    client: str
    key: str
    fingerprint: str
    token: str


def fingerprint(method: str, path: str, doc: Any) -> str:
    """The fingerprint of a request: method, path and the body as canonical JSON (key order ignored)."""
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(f"{method.upper()} {path}\n".encode() + canonical, digest_size=20).hexdigest()


def item_fingerprint(item: Item) -> str:
    return hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def batch_key(headers: Any, *, required: bool = False, header: str = HEADER) -> str | None:
    """The batch key of a request (``headers``: Starlette ``Headers``), or ``None`` when it carries none.

    400 ``invalid_idempotency_key`` for an empty key, one over 255 characters, or two key headers;
    400 ``idempotency_key_required`` when ``required`` and there is none."""
    values = headers.getlist(header)
    if not values:
        if required:
            raise ApiError(400, IDEMPOTENCY_KEY_REQUIRED, f"this endpoint requires an {header} header")
        return None
    if len(values) > 1:
        raise ApiError(400, INVALID_IDEMPOTENCY_KEY, f"send one {header} header, not {len(values)}")
    key = values[0].strip()
    if not key:
        raise ApiError(400, INVALID_IDEMPOTENCY_KEY, f"the {header} header is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ApiError(400, INVALID_IDEMPOTENCY_KEY,
                       f"the {header} header has {len(key)} characters; at most {MAX_KEY_LENGTH} are allowed")
    return key


class LostClaim(Exception):
    """The claim was taken over (its lease ran out) before this request could complete it."""


class IdempotencyStore:
    """Batch and item keys of one database; one instance per app, shared by its threads."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.retention = float(settings.idempotency_retention_seconds)
        self.lease = float(settings.idempotency_lease_seconds)
        self.item_field = ITEM_FIELD
        # Seams (instance attributes, so one app's store can be replaced without touching another's).
        self.fingerprint: Callable[[str, str, Any], str] = fingerprint
        self.item_fingerprint: Callable[[Item], str] = item_fingerprint
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()
        self.storage.executescript(_SCHEMA)

    # -- batch keys ------------------------------------------------------------
    def once(self, client: str, key: str | None, request_fingerprint: str,
             action: Callable[[sqlite3.Connection], Stored]) -> Stored:
        """Run ``action`` (in one transaction) at most once per ``(client, key)``.

        The seam for every endpoint that honours the batch key (the batch route, the single route,
        async job creation): ``action(conn)`` makes its changes with ``conn`` and returns the response
        to store; the response is stored in that same transaction. Returns the fresh response, or the
        stored one (``replayed=True``) for a repeat; raises ``ApiError`` 422 (the key was used with
        another request) or 409 (the first request is still running). Without a key, ``action`` runs
        once in its own transaction. An exception from ``action`` stores nothing and frees the key.
        """
        if key is None:
            with self.storage.transaction() as conn:
                return action(conn)
        claimed = self.begin(client, key, request_fingerprint)
        if isinstance(claimed, Stored):
            return claimed
        try:
            with self.storage.transaction() as conn:
                out = action(conn)
                self.complete(conn, claimed, out)
        except LostClaim:
            raise ApiError(409, IDEMPOTENCY_KEY_IN_USE,
                           "another request with this idempotency key took over; retry to get its response",
                           headers={"Retry-After": "1"}) from None
        except BaseException:
            self.release(claimed)
            raise
        return out

    def begin(self, client: str, key: str, request_fingerprint: str) -> Claim | Stored:
        """Claim ``key`` for this request, or return the stored response of an earlier identical one."""
        now = time.time()
        with self.storage.transaction() as conn:
            # One claimant per key across every instance on the database (a no-op on SQLite,
            # whose BEGIN IMMEDIATE already serialises this transaction).
            lock(conn, f"idempotency\n{client}\n{key}")
            self._maybe_purge(conn, now)
            row = conn.execute(_SELECT_KEY, (client, key)).fetchone()
            if row is not None and row[5] > now:
                stored_fp, state, status, headers, body, _ = row
                if stored_fp != request_fingerprint:
                    raise ApiError(422, IDEMPOTENCY_KEY_REUSED,
                                   "this idempotency key was used with a different request body; "
                                   "use a new key for a new request")
                if state != "done":
                    raise ApiError(409, IDEMPOTENCY_KEY_IN_USE,
                                   "a request with this idempotency key is still being processed; "
                                   "retry shortly to get its response", headers={"Retry-After": "1"})
                return Stored(status, bytes(body), orjson.loads(headers) if headers else {}, replayed=True)
            # Absent, expired, or a claim whose process died (lease over): this request takes it.
            token = uuid.uuid4().hex
            conn.execute(_CLAIM, (client, key, request_fingerprint, token, now, now + self.lease))
        return Claim(client, key, request_fingerprint, token)

    def complete(self, conn: sqlite3.Connection, claim: Claim, out: Stored) -> None:
        """Store ``out`` under ``claim`` inside the request's own transaction ``conn``."""
        cur = conn.execute(_COMPLETE, (out.status, orjson.dumps(out.headers), out.body, time.time() + self.retention,
                                       claim.client, claim.key, claim.token))
        if cur.rowcount != 1:
            raise LostClaim(claim.key)

    def release(self, claim: Claim) -> None:
        """Forget a claim whose request stored nothing (refused or crashed), so a retry can run."""
        try:
            with self.storage.transaction() as conn:
                conn.execute(_RELEASE, (claim.client, claim.key, claim.token))
        except self.storage.Error:  # pragma: no cover - the lease frees the key later anyway
            pass

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        # Expired keys are ignored by every look-up; deleting them is only housekeeping, done rarely.
        with self._purge_lock:
            if now < self._next_purge:
                return
            self._next_purge = now + _PURGE_EVERY_S
        for sql in _PURGE:
            conn.execute(sql, (now,))

    # -- item keys -------------------------------------------------------------
    def keyed_items(self, items: list[Item]) -> list[tuple[int, str]]:
        """``(index, key)`` of the items that carry a usable item key; 400 for a key used twice."""
        name = self.item_field
        keyed = [(i, k) for i, item in enumerate(items)
                 if isinstance(k := item.get(name), str) and 0 < len(k) <= MAX_KEY_LENGTH]
        seen: set[str] = set()
        twice: list[str] = []
        for _, k in keyed:
            if k in seen and k not in twice:
                twice.append(k)
            seen.add(k)
        if twice:
            shown = ", ".join(repr(k) for k in twice[:20])
            raise ApiError(400, DUPLICATE_IDEMPOTENCY_KEY,
                           f"the same {name} on more than one item of the batch: {shown}; nothing was applied",
                           keys=twice)
        return keyed

    def item_records(self, conn: sqlite3.Connection, client: str, keys: Iterable[str]
                     ) -> dict[str, tuple[str, bytes]]:
        """Unexpired item keys of ``client`` among ``keys``: key -> (fingerprint, result JSON)."""
        wanted = list(keys)
        now = time.time()
        found: dict[str, tuple[str, bytes]] = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start:start + _LOOKUP_CHUNK]
            sql = _SELECT_ITEM_KEYS.format(marks=",".join("?" * len(chunk)))
            for key, fp, result in conn.execute(sql, (client, now, *chunk)):
                found[key] = (fp, result)
        return found

    def remember_items(self, conn: sqlite3.Connection, client: str, rows: list[tuple[str, str, Result]]) -> None:
        """Store ``(key, fingerprint, result)`` of newly succeeded items (one ``executemany``)."""
        if rows:
            expires = time.time() + self.retention
            conn.executemany(_REMEMBER_ITEMS, [(client, k, fp, orjson.dumps(r), expires) for k, fp, r in rows])

    def apply_items_once(self, conn: sqlite3.Connection, client: str, items: list[Item], check: Check, *,
                         atomic: bool = False, created_at: str | None = None) -> BatchOutcome:
        """``apply_batch`` honouring item keys, inside the caller's transaction ``conn``."""
        keyed = self.keyed_items(items)
        if not keyed:
            return apply_batch(conn, client, items, check, atomic=atomic, created_at=created_at)
        fps = {i: self.item_fingerprint(items[i]) for i, _ in keyed}
        records = self.item_records(conn, client, (k for _, k in keyed))
        replayed: dict[int, Result] = {}
        reused: set[str] = set()
        for i, k in keyed:
            record = records.get(k)
            if record is None:
                continue
            if record[0] == fps[i]:
                replayed[i] = {**orjson.loads(record[1]), "id": items[i]["id"]}
            else:
                reused.add(items[i]["id"])
        rest = [i for i in range(len(items)) if i not in replayed]
        done_ids = {items[i]["id"] for i in replayed}
        outcome = apply_batch(conn, client, [_without_dependencies(items[i], done_ids) for i in rest],
                              _refusing(check, reused, self.item_field), atomic=atomic, created_at=created_at)
        if outcome.applied:
            key_at = dict(keyed)
            new = [(key_at[i], fps[i], outcome.results[pos]) for pos, i in enumerate(rest)
                   if i in key_at and outcome.results[pos]["status"] == "ok"]
            self.remember_items(conn, client, new)
        if not replayed:
            return outcome
        results: list[Result] = [None] * len(items)  # type: ignore[list-item]
        for pos, i in enumerate(rest):
            results[i] = outcome.results[pos]
        for i, result in replayed.items():
            results[i] = result
        return BatchOutcome(results=results, succeeded=outcome.succeeded + len(replayed), failed=outcome.failed,
                            applied=outcome.applied)


def _refusing(check: Check, reused_ids: set[str], name: str) -> Check:
    """``check``, with a per-item ``idempotency_key_reused`` for the items whose key was reused."""
    if not reused_ids:
        return check

    def refuse(item: Item) -> dict[str, Any] | None:
        if item.get("id") in reused_ids:
            return item_error(IDEMPOTENCY_KEY_REUSED,
                              f"{name} {item.get(name)!r} was used before with a different item payload; "
                              "use a new key for a new item", name)
        return check(item)
    return refuse


def _without_dependencies(item: Item, done_ids: set[str]) -> Item:
    """The item without ``depends_on`` entries already satisfied by items replayed from their keys."""
    deps = item.get("depends_on")
    if not done_ids or not isinstance(deps, list) or not any(d in done_ids for d in deps):
        return item
    return {**item, "depends_on": [d for d in deps if d not in done_ids]}
