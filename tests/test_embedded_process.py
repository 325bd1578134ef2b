"""The embedded reference server as a child process (`reference_server.start_in_subprocess`), as the CLI
starts it for `batchspec run` with no URL: it serves at once, ends with the run that started it, and
a child that cannot start is reported rather than waited for."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx

from reference_server import start_in_subprocess


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers kill(0); its state in /proc says it has ended.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_serves_on_a_port_known_before_it_started_and_stops_cleanly(tmp_path):
    with start_in_subprocess(db_path=str(tmp_path / "ref.db")) as server:
        # The socket listened before the child imported anything: the first request just queues.
        resp = httpx.post(server.base_url + "/orders/batch", timeout=30,
                          json={"operations": [{"id": "p-1", "amount": 12.5, "currency": "USD"}]})
        assert resp.status_code == 200 and resp.json()["results"][0]["status"] == "ok", resp.text
        assert httpx.get(server.base_url + "/orders/p-1", timeout=10).status_code == 200
        assert server.exited() is None
    assert server.process.returncode == 0  # shut down on end of its standard input, not killed


def test_child_does_not_outlive_a_parent_that_is_killed(tmp_path):
    # A parent killed with SIGKILL runs no cleanup: the child notices its stdin closing and exits.
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from reference_server import start_in_subprocess
        s = start_in_subprocess(db_path={str(tmp_path / 'ref.db')!r})
        print(s.process.pid, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert not _gone(child, 0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(child, 15), "the embedded server outlived the run that started it"


def test_a_child_that_cannot_start_is_reported(tmp_path):
    bad = tmp_path / "not-a-dir"
    bad.write_text("a file where a directory should be")
    server = start_in_subprocess(db_path=str(bad / "ref.db"))
    try:
        server.process.wait(30)
        assert server.exited() not in (None, 0)
        try:
            httpx.get(server.base_url + "/openapi.json", timeout=5)
            raise AssertionError("a dead embedded server still answered")
        except httpx.TransportError:
            pass  # refused: the listening socket closed with the child
    finally:
        server.stop()
