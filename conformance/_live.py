"""Live status while a long check works (ROB-01's fuzz loop): a hook the front end installs.

A check calls `tick("...")` as it goes; the CLI shows the latest tick beside the `[n/N]` counter.
Without a front end listening, `tick` costs one attribute read.
"""
from __future__ import annotations

from typing import Callable

_hook: Callable[[str], None] | None = None


def install(fn: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Set the hook (None removes it); returns the previous one so callers can restore it."""
    global _hook
    prev, _hook = _hook, fn
    return prev


def tick(text: str) -> None:
    if _hook is not None:
        _hook(text)
