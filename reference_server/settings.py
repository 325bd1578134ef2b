"""Limits and knobs of the reference server (one frozen dataclass)."""
from __future__ import annotations

from dataclasses import dataclass


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
    busy_timeout_ms: int = 5000
    """SQLite ``busy_timeout`` for writers waiting on another transaction."""
