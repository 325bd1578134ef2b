"""The embedded reference server in a process of its own: ``start_in_process`` (the CLI's embedded run).

The kit binds and listens on a loopback socket and hands it to a fresh interpreter
(``python -m reference_server._process FD DB``, ``main`` below), so the URL is known at once and a
request sent before the child is up waits in the backlog. The child serves until its stdin, a pipe
the kit never writes, reaches EOF: the kit closed it to stop the server, or the kit died. It writes
one line, ``ready``, on stdout once uvicorn accepts connections.

Why a process: the server's work (HTTP parsing, validation, SQLite) then runs on another core
instead of sharing the kit's interpreter lock with every check (issue 18; docs/performance.md,
round 9). This module imports only the standard library: the kit's process never loads the
server's own stack (starlette, uvicorn, sqlite3) to start it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Bounded: open keep-alive connections, or a request whose body never comes (ROB-05), must not
# hold the kit's exit.
GRACEFUL_S = 1.0

@dataclass
class ServerProcess:
    """A reference server running in a child process (``start_in_process``)."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Any = field(repr=False)  # the child's stderr: a temporary file, read only to say why it failed
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def _watch_ready(self) -> None:
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() == b"ready":
            self._ready.set()

    def ready(self, timeout: float = 10.0) -> bool:
        """Whether the server accepts connections (waiting up to `timeout` seconds for it)."""
        return self._ready.wait(timeout)

    def failure(self) -> str | None:
        """Why the server is not running, if it ended on its own: its exit status and last words."""
        if self._stopped or self.process.poll() is None:
            return None
        self.log.seek(0)
        tail = self.log.read().decode("utf-8", "replace").strip().splitlines()[-5:]
        return f"the embedded reference server exited ({self.process.returncode})" + (
            ": " + " / ".join(tail) if tail else "")

    def stop(self, timeout: float = 5.0, *, graceful: bool = True) -> None:
        """Close the child's stdin (it then shuts down, bounded) and wait; kill it past `timeout`.
        `graceful=False`: kill it at once (a server whose database is thrown away next: the CLI's)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
            if not graceful:
                raise subprocess.TimeoutExpired(self.process.args, 0)
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_process(db_path: str | None = None, host: str = "127.0.0.1") -> ServerProcess:
    """Start the reference server in a child process (``python -m reference_server._process``) on a
    free port of ``host``; return at once.

    The socket is bound and listening here and handed down, so the URL is known now and a request
    sent before the child is up waits in the backlog instead of being refused (``ready()`` says
    when it is up; if the child fails, its socket closes and requests are refused). The child is a
    fresh interpreter that imports only the server, in a session of its own (a Ctrl-C in the
    terminal reaches the kit, which stops the server when it is done), with at most two malloc
    arenas (``MALLOC_ARENA_MAX``, unless set). It ends when ``stop()`` closes its stdin, or when this
    process dies (the same pipe reaches EOF). Raises OSError if it cannot be started."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(2048)
        port = sock.getsockname()[1]
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "1")
        env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
        # The child imports this package from where this process did (a source checkout, a
        # benchmark's worktree), whatever its working directory.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = tempfile.TemporaryFile()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "reference_server._process", str(sock.fileno()), db_path or ""],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, pass_fds=(sock.fileno(),),
                env=env, start_new_session=True)
        except BaseException:
            log.close()
            raise
    finally:
        sock.close()  # the child's copy is the one that serves
    shown = f"[{host}]" if ":" in host else host
    running = ServerProcess(base_url=f"http://{shown}:{port}", process=process, log=log)
    threading.Thread(target=running._watch_ready, name=f"batchspec-reference-{port}-ready", daemon=True).start()
    return running


def main(argv: list[str]) -> int:
    """The child: serve the reference server on the inherited socket until stdin reaches EOF."""
    # httpx (the server's callback client) imports its command-line client when rich, click and
    # pygments are installed (the kit's environment has them): megabytes of code this process never
    # runs. Blocked here only, in a process that is the server's own; httpx then falls back to a stub.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
    import uvicorn

    from .app import create_app
    from .server import UVICORN_OPTIONS

    fd, db_path = int(argv[0]), argv[1] or None
    sock = socket.socket(fileno=fd)
    try:
        app = create_app(db_path)
    except Exception as exc:  # noqa: BLE001 - any reason (a database that cannot be opened): one line, no traceback
        print(f"batchspec: the embedded reference server did not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(app, lifespan="on", timeout_graceful_shutdown=GRACEFUL_S, **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    # Stopped by the pipe (or by the kit's signal): a Ctrl-C in the terminal reaches the kit only
    # (this process has a session of its own), which then writes its interrupted report against a
    # server that is still up.

    def watch() -> None:
        sys.stdin.buffer.read()  # returns at EOF
        server.should_exit = True

    threading.Thread(target=watch, name="batchspec-stdin-watch", daemon=True).start()

    def ready() -> None:
        # The parent waits for this line; a server that never starts ends `server.run` instead.
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.005)
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    threading.Thread(target=ready, name="batchspec-ready", daemon=True).start()
    server.run(sockets=[sock])  # on the pinned loop (config.get_loop_factory)
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
