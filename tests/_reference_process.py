"""The reference server as a real process on loopback, for the kit's tests and benchmarks.

``start_server(db)`` runs ``python -m reference_server --host 127.0.0.1 --port P --db DB`` on a free
port (or ``python -c CODE`` with the same arguments, for a wrapped or broken server) with this tree
first on ``PYTHONPATH``, and returns once ``/openapi.json`` answers 200; ``stop_server(proc)`` kills
it and reaps it.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, code: str | None = None, *, timeout: float = 20) -> tuple[subprocess.Popen[bytes], str]:
    """(the process, its base URL) once it answers; a RuntimeError with its stderr's tail when it exits
    or does not answer within `timeout` seconds."""
    port = _free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--db", db]
    cmd = [sys.executable, "-m", "reference_server", *args] if code is None else [sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
