"""Storage of the reference server: one seam, two backends.

- ``Storage`` (SQLite, WAL, the embedded default): one connection per worker thread, a write is
  one ``BEGIN IMMEDIATE`` transaction, which SQLite serialises between threads and processes.
- ``PostgresStorage`` (``--db postgresql://...``, psycopg 3 and a ``psycopg_pool`` pool): a write
  is one transaction on a pooled connection; what SQLite gets from its one writer, PostgreSQL gets
  from row locks (``FOR UPDATE [SKIP LOCKED]``) and transaction-scoped advisory locks
  (``lock(conn, name)``), so any number of processes on one database form one service.

Both offer the same seam, used by every other module: ``transaction()`` (a write transaction),
``snapshot()`` (a consistent read), ``reading()`` (an autocommit read), ``executescript`` for the
schema (written once, in SQLite's dialect; ``_pg_sql`` translates it), ``for_update`` and
``skip_locked`` (row-lock clauses, empty on SQLite), ``Busy`` (the transient error a background
worker retries later). Statements use ``?`` placeholders on both.

Orders are scoped per client: the primary key is ``(client, id)``, so an order of client A does
not exist for client B. Every statement is a prepared (cached) statement; a batch inserts its
rows with one ``executemany`` and looks up every id it needs with one query.
"""
from __future__ import annotations

import collections
import functools
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

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

_COLUMNS = ("client", "id", "amount", "currency", "note", "parent_id", "version", "created_at")
_INSERT = ("INSERT INTO orders (client, id, amount, currency, note, parent_id, version, created_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SELECT_ONE = ("SELECT id, amount, currency, note, parent_id, version, created_at FROM orders "
               "WHERE client = ? AND id = ?")
_SELECT_EXISTING = "SELECT id FROM orders WHERE client = ? AND id IN ({marks})"
# Ids are bound as parameters (never through json_each, which would cut a string at a NUL character);
# a batch of 1,000 items needs two such queries.
_LOOKUP_CHUNK = 500


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str | None) -> bool:
    """Whether ``db`` names a PostgreSQL database (a ``postgresql://`` URL) rather than a SQLite file."""
    return bool(db) and db.startswith(POSTGRES_SCHEMES)  # type: ignore[union-attr]


def open_storage(db: str, *, busy_timeout_ms: int = 5000, pool_size: int = 16) -> Storage | PostgresStorage:
    """The storage named by ``db``: a ``postgresql://`` URL or a SQLite file path."""
    if is_postgres(db):
        return PostgresStorage(db, pool_size=pool_size)
    return Storage(db, busy_timeout_ms=busy_timeout_ms)


def lock(conn: Any, name: str) -> None:
    """Serialise the callers of ``name`` until the end of the transaction ``conn``.

    A no-op on SQLite, whose write transactions already exclude each other; an advisory lock
    (released by commit, rollback or the death of the session) on PostgreSQL."""
    if isinstance(conn, PgConnection):
        conn.lock(name)


class _Writers:
    """This process's SQLite writers, let in one at a time in the order they came (a FIFO hand-over).

    SQLite's own busy handler makes a writer that finds the lock taken sleep and retry (1 ms, then
    longer, up to 100 ms a try), so a thread that writes again at once keeps the lock from one that
    waits: the job worker, committing chunk after chunk, kept a cancel out until the job had ended
    (the cancel then found it completed: ASYNC-10 SKIPped in about one embedded run in five). Here a
    writer waits on an event of its own and is handed the lock as the previous one commits. Writers
    of other processes on the same file still meet SQLite's busy handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._waiting: collections.deque[tuple[int, threading.Event]] = collections.deque()

    def acquire(self, timeout: float) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner == me:  # what SQLite itself answers (a deadlock otherwise)
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            if self._owner is None:
                self._owner = me
                return
            turn = (me, threading.Event())
            self._waiting.append(turn)
        if turn[1].wait(timeout):
            return
        with self._lock:
            if turn[1].is_set():  # handed over as the wait timed out
                return
            self._waiting.remove(turn)
        raise sqlite3.OperationalError(f"database is locked (another writer of this process held it for "
                                       f"{timeout:g} s)")

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._owner, event = self._waiting.popleft()
                event.set()
            else:
                self._owner = None


class Storage:
    """The order store of one SQLite file."""

    dialect = "sqlite"
    # A one-row read (GET /orders/{id}) is served on the event loop: in WAL mode a reader never waits
    # for a writer, and the read takes tens of microseconds, less than the hop to a worker thread and
    # back (measured in process: 0.74 -> 0.65 ms per GET end to end; issue 18, round 12).
    inline_reads = True
    for_update = ""
    skip_locked = ""
    Error: type[Exception] = sqlite3.Error
    Busy: type[Exception] = sqlite3.OperationalError

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writers = _Writers()
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
            # 256 KiB of page cache per connection (SQLite's default is 2 MiB), one connection per
            # worker thread: the embedded server's peak memory counts in the kit's (issue 18).
            conn.execute("PRAGMA cache_size=-256")
            conn.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of the process in WAL mode
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any error.
        This process's writers take it in turn, in the order they asked (``_Writers``)."""
        conn = self.connection()
        self._writers.acquire(self.busy_timeout_ms / 1000)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            self._writers.release()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self.connection()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for single-statement reads (autocommit)."""
        yield self.connection()

    def executescript(self, script: str) -> None:
        """Run DDL (``CREATE ... IF NOT EXISTS``), written in SQLite's dialect."""
        self.connection().executescript(script)

    def get_order(self, client: str, order_id: str) -> Order | None:
        """The stored order ``order_id`` of ``client``, or ``None``."""
        with self.reading() as conn:
            row = conn.execute(_SELECT_ONE, (client, order_id)).fetchone()
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


def existing_ids(conn: Any, client: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` already exist for ``client`` (one query, whatever the number of ids).

    Called first in every write of orders: on PostgreSQL it takes the client's write lock, so
    the ids it returns stay true until the caller's transaction ends (two instances applying
    batches of one client never both decide that an id is free)."""
    lock(conn, "orders\n" + client)
    wanted = list(ids)
    if isinstance(conn, PgConnection):  # one array parameter, whatever the number of ids
        return {row[0] for row in conn.execute("SELECT id FROM orders WHERE client = ? AND id = ANY(?)",
                                               (client, wanted))}
    found: set[str] = set()
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start:start + _LOOKUP_CHUNK]
        sql = _SELECT_EXISTING.format(marks=",".join("?" * len(chunk)))
        found.update(row[0] for row in conn.execute(sql, (client, *chunk)))
    return found


def insert_orders(conn: Any, client: str, orders: list[Order]) -> None:
    """Insert ``orders`` of ``client`` with one ``executemany`` (inside the caller's transaction)."""
    if orders:
        if isinstance(conn, PgConnection):
            # PostgreSQL has no column that keeps 10 an integer and 10.5 a float: it stores the JSON
            # text. COPY, not executemany: one stream instead of a statement per row (the ids were
            # found free under the client's write lock, so no row can conflict).
            conn.copy("orders", _COLUMNS, [
                (client, o["id"], _json_text(o["amount"]), o["currency"], o.get("note"), o.get("parent_id"),
                 o["version"], o["created_at"]) for o in orders])
            return
        conn.executemany(_INSERT, [
            (client, o["id"], o["amount"], o["currency"], o.get("note"), o.get("parent_id"),
             o["version"], o["created_at"]) for o in orders])


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def row_to_order(row: tuple[Any, ...]) -> Order:
    """A stored row as the wire resource (optional members omitted when absent)."""
    order_id, amount, currency, note, parent_id, version, created_at = row
    if isinstance(amount, str):  # PostgreSQL: the JSON text of the number
        amount = orjson.loads(amount)
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


# -- PostgreSQL ----------------------------------------------------------------------------------

# PostgreSQL text cannot hold NUL, which an id may contain ("any Unicode"): strings cross the
# boundary escaped with a noncharacter (U+10FFFF), doubled when it occurs itself. Injective, so
# equality, uniqueness and look-ups are unchanged; decoded on every string read back.
_ESC = "\U0010ffff"


def _enc(value: Any) -> Any:
    if isinstance(value, str) and ("\x00" in value or _ESC in value):
        return value.replace(_ESC, _ESC + _ESC).replace("\x00", _ESC + "0")
    if isinstance(value, list):
        return [_enc(v) for v in value]
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, str) and _ESC in value:
        return re.sub(_ESC + "(.)", lambda m: "\x00" if m.group(1) == "0" else _ESC, value, flags=re.S)
    return value


def _params(params: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(_enc(p) for p in params)


def _row(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    return tuple(_dec(v) for v in row)


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """A statement written for SQLite, for PostgreSQL: ``?`` placeholders and the schema's types."""
    sql = sql.replace("?", "%s")
    sql = re.sub(r"\bBLOB\b", "BYTEA", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    sql = re.sub(r"\)\s*WITHOUT ROWID", ")", sql)
    # SQLite's untyped ``amount`` (an integer stays an integer): PostgreSQL keeps the JSON text.
    sql = re.sub(r"\bamount(\s+)NOT NULL", r"amount TEXT\1NOT NULL", sql)
    return sql


class _PgCursor:
    """The part of a ``sqlite3.Cursor`` the server uses, over a psycopg cursor (strings decoded)."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return _row(self._cur.fetchone())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [_row(r) for r in self._cur.fetchall()]  # type: ignore[misc]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for r in self._cur:
            yield _row(r)  # type: ignore[misc]


class PgConnection:
    """A pooled psycopg connection behind the ``sqlite3.Connection`` methods the server calls."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Iterable[Any] = ()) -> _PgCursor:
        return _PgCursor(self.raw.execute(_pg_sql(sql), _params(params)))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_pg_sql(sql), [_params(r) for r in rows])

    def executescript(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self.raw.execute(_pg_sql(statement))

    def copy(self, table: str, columns: tuple[str, ...], rows: Iterable[Iterable[Any]]) -> None:
        """``COPY table (columns) FROM STDIN``: many rows in one stream (inside the caller's transaction)."""
        with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(_params(row))

    def lock(self, name: str) -> None:
        self.raw.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_enc(name),))


class PostgresStorage:
    """The order store of one PostgreSQL database, shared by every instance started on it."""

    dialect = "postgresql"
    inline_reads = False  # every read is a round trip to the database: never on the event loop
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, pool_size: int = 16, connect_timeout: float = 10.0) -> None:
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError("a postgresql:// database needs psycopg 3 and psycopg_pool: "
                               "pip install 'batchspec[postgres]'") from None
        self.Error: type[Exception] = psycopg.Error
        self.Busy: type[Exception] = psycopg.OperationalError
        self.url = url
        # TCP keepalives: a session whose instance vanished without closing its socket (power
        # loss, partition) is ended by the server within ~20 s, which frees its row and
        # advisory locks and rolls back its chunk; a SIGKILLed process closes its socket at once.
        self._kwargs = {"autocommit": True, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 5,
                        "keepalives_count": 3}
        self._pool_class = ConnectionPool
        self._pool_size = max(2, pool_size)
        self._connect_timeout = connect_timeout
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self.executescript(_SCHEMA)

    @property
    def pool(self) -> Any:
        """The connection pool, opened on first use (and again after ``close``, as SQLite's connections are)."""
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is None:
                self._probe()
                pool = self._pool_class(self.url, min_size=1, max_size=self._pool_size, kwargs=self._kwargs,
                                        open=False, name="batchspec-reference")
                pool.open(wait=False)
                try:
                    pool.wait(timeout=self._connect_timeout)
                except Exception as exc:
                    pool.close()
                    raise RuntimeError("cannot connect to the PostgreSQL database "
                                       f"({type(exc).__name__}); is it running and does the database exist?"
                                       ) from None
                self._pool = pool
            return self._pool

    def _probe(self) -> None:
        """One direct connection first, so an unreachable database is one clear error, not pool retries."""
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=max(1, int(self._connect_timeout))).close()
        except psycopg.Error as exc:
            # libpq's message names host, port, user and database, never the password.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"cannot connect to the PostgreSQL database: {reason}") from None

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """One write transaction on a pooled connection: committed on success, rolled back on any error."""
        with self.pool.connection() as raw, raw.transaction():
            yield PgConnection(raw)

    @contextmanager
    def snapshot(self) -> Iterator[PgConnection]:
        """A read-only REPEATABLE READ transaction: one snapshot for every query inside."""
        with self.pool.connection() as raw, raw.transaction():
            raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield PgConnection(raw)

    @contextmanager
    def reading(self) -> Iterator[PgConnection]:
        with self.pool.connection() as raw:
            yield PgConnection(raw)

    def executescript(self, script: str) -> None:
        # Instances starting together must not race on CREATE ... IF NOT EXISTS (it is not atomic).
        with self.transaction() as conn:
            conn.lock("schema")
            conn.executescript(script)

    def get_order(self, client: str, order_id: str) -> Order | None:
        with self.reading() as conn:
            row = conn.execute(_SELECT_ONE, (client, order_id)).fetchone()
        return None if row is None else row_to_order(row)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
