"""The embedded reference server in a process of its own (reference_server._process, issue 18).

`batchspec run --embedded-server process` starts the reference server as a child process, so that
its work runs on another core. These tests prove that it serves the same server (the full embedded
run passes there), that it never outlives the kit (stopped, or the kit killed), that a server that
cannot start says why instead of hanging the run, and that the kit's process never loads the
server's stack to start it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from conformance.cli import main
from reference_server import ServerProcess, start_in_process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _gone_within(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_server_process_serves_and_stops(tmp_path):
    server = start_in_process(str(tmp_path / "ref.db"))
    try:
        # Sent before the child is up: the request waits in the listening socket's backlog.
        resp = httpx.post(f"{server.base_url}/orders/batch", json={"operations": [{"id": "a-1", "amount": 5,
                                                                                   "currency": "USD"}]}, timeout=30)
        assert server.ready(10)
        assert resp.status_code == 200, resp.text
        assert httpx.get(f"{server.base_url}/orders/a-1", timeout=10).json()["amount"] == 5
        assert server.failure() is None
    finally:
        server.stop()
    assert server.process.returncode is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/orders/a-1", timeout=2)


def test_the_server_process_ends_when_the_kit_is_killed(tmp_path):
    """Its stdin is a pipe from the kit: a kit killed with SIGKILL closes it, and the server exits."""
    code = textwrap.dedent(f"""
        import sys, time
        from reference_server import start_in_process
        s = start_in_process({str(tmp_path / 'ref.db')!r})
        assert s.ready(20)
        print(s.process.pid, flush=True)
        time.sleep(600)
    """)
    kit = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(kit.stdout.readline())
        assert _alive(pid)
        kit.send_signal(signal.SIGKILL)
        kit.wait(10)
        assert _gone_within(pid, 10), "the server process outlived the kit"
    finally:
        kit.kill()
        kit.wait()


def test_a_server_that_cannot_start_says_why(tmp_path):
    """A database that cannot be opened: the child exits at once with its reason, requests are refused
    (no hang), and `failure()` carries the reason for the console."""
    server = start_in_process(str(tmp_path / "no-such-dir" / "ref.db"))
    try:
        assert not server.ready(10)
        end = time.monotonic() + 10
        while server.failure() is None and time.monotonic() < end:
            time.sleep(0.05)
        why = server.failure()
        assert why and "exited (2)" in why and "did not start" in why, why
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/orders/x", timeout=5)
    finally:
        server.stop()


def test_starting_it_loads_no_server_stack_in_the_kit():
    """The launcher imports only the standard library: the kit's process keeps its memory."""
    out = subprocess.run([sys.executable, "-c", "import sys, conformance.cli; from reference_server import "
                          "start_in_process, ServerProcess; print(sorted(m for m in ('starlette', 'uvicorn', "
                          "'sqlite3', 'reference_server.app') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_embedded_run_in_a_server_process_passes(tmp_path, capsys):
    """The same reference server, in its own process: every rule the embedded run checks passes, as
    in the kit's process (`--embedded-server thread`, the default, is every other CLI test's)."""
    code = main(["run", "--embedded-server", "process", "--report-dir", str(tmp_path / "r"), "-q"])
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    bad = {r["id"]: r["reason"] for r in doc["rules"] if r["verdict"] in ("FAIL", "ERROR")}
    assert code == 0 and not bad, (bad, out[-2000:])
    assert "started the embedded reference server" in out


def test_the_cli_kills_its_server_process_when_done(tmp_path, monkeypatch, capsys):
    started: list[ServerProcess] = []
    import reference_server._process as proc

    real = proc.start_in_process

    def spy(*args, **kwargs):
        started.append(real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(proc, "start_in_process", spy)
    import reference_server

    monkeypatch.setattr(reference_server, "start_in_process", spy, raising=False)
    code = main(["run", "--embedded-server", "process", "--rule", "CORE-01", "-q"])
    capsys.readouterr()
    assert code == 0 and len(started) == 1
    assert started[0].process.returncode is not None, "the server process was left running"


def test_embedded_server_is_a_closed_choice(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--embedded-server", "elsewhere"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_run_against_a_url_ignores_the_choice(tmp_path, capsys):
    """`--embedded-server` concerns the embedded run only: with a URL no server is started."""
    code = main(["run", "http://127.0.0.1:9/", "--embedded-server", "process", "-q"])
    err = capsys.readouterr().err
    assert code == 3 and "unusable" in err, err
    assert "embedded reference server" not in err
