"""The batchspec reference server: a batch HTTP API that passes every rule of the kit.

Public API: ``create_app`` (the ASGI app), ``serve`` (run until interrupted),
``start_in_thread`` (embedded, on a free loopback port) and ``Settings`` (the limits).
"""
from __future__ import annotations

from .app import create_app
from .server import RunningServer, serve, start_in_thread
from .settings import Settings

__all__ = ["create_app", "serve", "start_in_thread", "Settings", "RunningServer"]
