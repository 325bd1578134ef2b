"""SQLite storage (WAL): one connection per worker thread, a batch is one ``BEGIN IMMEDIATE`` transaction.

Orders are scoped per client: the primary key is ``(client, id)``, so an order of client A does
not exist for client B. Every statement is a prepared (cached) statement; a batch inserts its
rows with one ``executemany`` and looks up every id it needs with one query.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

Order = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client     TEXT NOT NULL,
    id         TEXT NOT NULL,
    amount              NOT NULL,  -- no type affinity: an integer stays an integer, a float a float
    currency   TEXT NOT NULL,
    note       TEXT,
    parent_id  TEXT,
    version    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client, id)
) WITHOUT ROWID;
"""

_INSERT = ("INSERT INTO orders (client, id, amount, currency, note, parent_id, version, created_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT_ONE = ("SELECT id, amount, currency, note, parent_id, version, created_at FROM orders "
               "WHERE client = ? AND id = ?")
_SELECT_EXISTING = "SELECT id FROM orders WHERE client = ? AND id IN ({marks})"
# Ids are bound as parameters (never through json_each, which would cut a string at a NUL character);
# a batch of 1,000 items needs two such queries.
_LOOKUP_CHUNK = 500


class Storage:
    """The order store of one SQLite file."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        conn = self.connection()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use), in autocommit mode with WAL and busy_timeout."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   cached_statements=64)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of the process in WAL mode
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any error."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def get_order(self, client: str, order_id: str) -> Order | None:
        """The stored order ``order_id`` of ``client``, or ``None``."""
        row = self.connection().execute(_SELECT_ONE, (client, order_id)).fetchone()
        return None if row is None else row_to_order(row)

    def close(self) -> None:
        """Close every connection opened by any thread."""
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - best effort at shutdown
                    pass
            self._connections.clear()
        self._local = threading.local()


def existing_ids(conn: sqlite3.Connection, client: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` already exist for ``client`` (one query, whatever the number of ids)."""
    wanted = list(ids)
    found: set[str] = set()
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start:start + _LOOKUP_CHUNK]
        sql = _SELECT_EXISTING.format(marks=",".join("?" * len(chunk)))
        found.update(row[0] for row in conn.execute(sql, (client, *chunk)))
    return found


def insert_orders(conn: sqlite3.Connection, client: str, orders: list[Order]) -> None:
    """Insert ``orders`` of ``client`` with one ``executemany`` (inside the caller's transaction)."""
    if orders:
        conn.executemany(_INSERT, [
            (client, o["id"], o["amount"], o["currency"], o.get("note"), o.get("parent_id"),
             o["version"], o["created_at"]) for o in orders])


def row_to_order(row: tuple[Any, ...]) -> Order:
    """A stored row as the wire resource (optional members omitted when absent)."""
    order_id, amount, currency, note, parent_id, version, created_at = row
    order: Order = {"id": order_id, "amount": amount, "currency": currency}
    if note is not None:
        order["note"] = note
    if parent_id is not None:
        order["parent_id"] = parent_id
    order["version"] = version
    order["created_at"] = created_at
    return order


def new_order(item: dict[str, Any], created_at: str) -> Order:
    """The resource created from a valid item (batch-only members dropped), in the order of ``row_to_order``."""
    order: Order = {"id": item["id"], "amount": item["amount"], "currency": item["currency"]}
    note = item.get("note")
    if note is not None:
        order["note"] = note
    parent = item.get("parent_id")
    if parent is not None:
        order["parent_id"] = parent
    order["version"] = 1
    order["created_at"] = created_at
    return order
