"""Limits and knobs of the reference server (one frozen dataclass)."""
from __future__ import annotations

from dataclasses import dataclass

# A request's head (request line and headers) may be this long (reference_server/_http.py: 431 past
# it). h11 refused a head over 16 KiB by dropping the connection; llhttp has no bound of its own, and
# httptools keeps a header's bytes until it ends, so without one a client could make the server hold
# a head as long as it keeps sending.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Settings:
    """Limits of the reference server; the defaults match ``conformance/profiles/reference.yaml``."""

    max_items: int = 1000
    """Items per synchronous (non-atomic) batch."""
    atomic_max_items: int = 100
    """Items per atomic (all-or-nothing) batch."""
    async_max_items: int = 10000
    """Items per async import job."""
    max_bytes: int = 1048576
    """Bytes per request body (1 MiB)."""
    idempotency_retention_seconds: int = 86400
    """How long an idempotency key is honoured (24 hours)."""
    idempotency_lease_seconds: int = 60
    """How long a claimed batch key stays in flight before a retry may take over (its process died)."""
    idempotency_key_required: bool = False
    """Whether batch requests must carry an ``Idempotency-Key`` (400 ``idempotency_key_required``)."""
    busy_timeout_ms: int = 5000
    """SQLite ``busy_timeout`` for writers waiting on another transaction."""
    async_chunk_items: int = 500
    """Items an async job applies per transaction (its progress is committed with each chunk)."""
    async_retention_seconds: int = 86400
    """How long a finished job and its results stay readable (24 hours)."""
    async_callback_max_attempts: int = 8
    """Deliveries of a job's callback before it is abandoned."""
    async_callback_backoff: float = 0.25
    """Seconds before the first callback retry; doubled on every further attempt (capped at 60)."""
