"""The batchspec reference server: a batch HTTP API that passes every rule of the kit.

Public API: ``create_app`` (the ASGI app), ``serve`` (run until interrupted),
``start_in_thread`` (in the caller's process, on a free loopback port), ``start_in_process`` (a
child process: the CLI's embedded run) and ``Settings`` (the limits).

Attributes are imported on first use (PEP 562): ``start_in_process`` needs only the standard
library, so the kit's process starts the server without loading starlette, uvicorn or sqlite3.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._process import ServerProcess, start_in_process
    from .app import create_app
    from .server import RunningServer, serve, start_in_thread
    from .settings import Settings

__all__ = ["create_app", "serve", "start_in_thread", "start_in_process", "Settings", "RunningServer",
           "ServerProcess"]

_WHERE = {"create_app": ".app", "serve": ".server", "start_in_thread": ".server", "RunningServer": ".server",
          "start_in_process": "._process", "ServerProcess": "._process", "Settings": ".settings"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
