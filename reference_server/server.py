"""Running the reference server: ``serve`` (foreground) and ``start_in_thread`` (in the caller's process);
``start_in_process`` (the CLI's embedded run, a process of its own) is in ``_process``."""
from __future__ import annotations

from typing import Any

import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette

from ._http import JSONErrorProtocol
from .app import create_app

DB_ENV = "BATCHSPEC_REFERENCE_DB"

# One behaviour whatever else is installed: the HTTP protocol and the event loop are pinned, not left
# to uvicorn's "auto". httptools (llhttp, in C) answering unparseable requests with the server's JSON
# error (_http.py), and uvloop where it exists (not on Windows): the embedded server shares the kit's
# process and interpreter lock, and with h11 and the asyncio loop it held ~40% of that process's
# time; the embedded run took 0.89x as long with these (docs/performance.md, round 13). No access
# log: a log line per request is work on the hot path that nobody reads on a reference server.
UVICORN_OPTIONS: dict[str, Any] = {"http": JSONErrorProtocol,
                                   "loop": "asyncio" if sys.platform == "win32" else "uvloop",
                                   "log_level": "warning", "access_log": False}


def app_from_env() -> Starlette:
    """Import-string factory for multi-worker uvicorn: the db path comes from ``BATCHSPEC_REFERENCE_DB``."""
    return create_app(os.environ.get(DB_ENV) or None)


def serve(host: str = "127.0.0.1", port: int = 8000, db_path: str | None = None, workers: int = 1) -> None:
    """Run the reference server with uvicorn until interrupted.

    With ``workers > 1`` every worker process opens the same SQLite file (WAL makes that safe);
    without ``db_path`` a temporary file is created for them to share. ``db_path`` may be a
    ``postgresql://`` URL: every process started on that database is an instance of one service.
    A database that cannot be opened ends the process with one clear line (exit status 2).
    """
    if workers > 1 and db_path is None:
        import tempfile
        db_path = os.path.join(tempfile.mkdtemp(prefix="batchspec-ref-"), "orders.db")
    try:
        app = create_app(db_path)  # also creates the schema once, before any worker races for it
    except RuntimeError as exc:
        print(f"batchspec serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if workers <= 1:
        uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS)
        return
    assert db_path is not None
    os.environ[DB_ENV] = db_path
    uvicorn.run("reference_server.server:app_from_env", factory=True, host=host, port=port,
                workers=workers, **UVICORN_OPTIONS)


@dataclass
class RunningServer:
    """A reference server running in a daemon thread."""

    base_url: str
    server: uvicorn.Server
    thread: threading.Thread
    app: Starlette
    _stopped: bool = field(default=False, repr=False)
    _asked: bool = field(default=False, repr=False)

    def failure(self) -> str | None:
        """Why the server is not running, if it ended on its own (as ServerProcess.failure says it)."""
        if self._asked or self.thread.is_alive():
            return None
        return "the embedded reference server's thread ended"

    def request_stop(self) -> None:
        """Ask uvicorn to exit without waiting: its graceful shutdown (~0.2 s, mostly uvicorn's own
        polling) then overlaps what the caller does next; `stop()` waits for it."""
        self._asked = True
        self.server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        if self._stopped:
            return
        self._stopped = True
        self.request_stop()
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(db_path: str | None = None, host: str = "127.0.0.1", *,
                    timeout: float = 10.0, app: Any = None) -> RunningServer:
    """Start uvicorn on a free port of ``host`` in a daemon thread; return once it accepts connections.

    ``app`` serves another ASGI app instead (the kit's tests serve mutants this way)."""
    app = app if app is not None else create_app(db_path)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it
    # Nagle holds back the body behind the headers until the delayed ACK, ~40 ms every response.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", **UVICORN_OPTIONS)
    server = uvicorn.Server(config)

    def run() -> None:
        server.run(sockets=[sock])  # on the pinned loop (config.get_loop_factory)

    thread = threading.Thread(target=run, name=f"batchspec-reference-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the reference server did not start")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(base_url=f"http://{shown}:{port}", server=server, thread=thread, app=app)
