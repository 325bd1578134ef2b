"""The ASYNC-14 callback receiver: a loopback HTTP server the kit listens on for a job's callback.

It listens only on the target's own loopback family (`loopback_host` SKIPs any other target): the
kit never exposes a listener to, or calls, anything but a loopback target.
"""
from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest


class CallbackReceiver:
    """A loopback HTTP receiver for callbacks: records every request, answers from a script."""

    def __init__(self, host: str, answers: list[int] | None = None):
        self.received: list[dict[str, Any]] = []
        self.answers = list(answers or [])
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer.arrived:
                    status = outer.answers.pop(0) if outer.answers else 200
                    outer.received.append({"method": self.command, "path": self.path, "at": time.monotonic(),
                                           "headers": dict(self.headers.items()), "body": body, "answered": status})
                    outer.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_GET = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="batchspec-callback-receiver",
                                       daemon=True)
        port = self.server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.token = uuid.uuid4().hex
        # A path and a query of its own: a delivery that drops either (posts to the origin, or rebuilds
        # the URL from parts) is not one "there" (ASYNC-14), and the receiver records where it landed.
        self.url = f"http://{shown}:{port}/batchspec-callback/{self.token}?delivery={self.token[:8]}"

    def __enter__(self) -> "CallbackReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count and time.monotonic() < end:
                self.arrived.wait(max(0.0, end - time.monotonic()))
            return list(self.received)


def loopback_host(target) -> str:
    """Where the receiver listens: the target's own loopback family; SKIP for anything else."""
    if target.in_process:
        pytest.skip("the target runs in-process (no socket): it cannot reach a callback receiver")
    host = urlsplit(target.base_url).hostname or ""
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if addr is None or not addr.is_loopback:
        pytest.skip(f"the target ({host}) is not on loopback: the kit runs a callback receiver only for a "
                    "loopback target (it never exposes a listener to, or calls, anything else)")
    return "::1" if addr.version == 6 else "127.0.0.1"
