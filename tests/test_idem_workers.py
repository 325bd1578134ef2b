"""The reference server keeps its idempotency promises with two worker processes on one database file."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conformance import Verdict
from conftest import ROOT, reference_profile, verdicts

import conformance


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batchspec() -> list[str]:
    exe = shutil.which("batchspec", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "conformance"]


@pytest.fixture
def two_workers(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([*_batchspec(), "serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
                             "--db", str(tmp_path / "orders.db")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"batchspec serve exited: {proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                httpx.get(base + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("batchspec serve --workers 2 did not start within 30 s")
                time.sleep(0.1)
        yield base
    finally:
        # The server and its workers are in their own session: stop exactly that group.
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


def test_idem_class_passes_against_two_workers(two_workers):
    report = conformance.run(reference_profile(two_workers), classes=["IDEM"])
    idem = {rid: v for rid, v in verdicts(report).items() if rid.startswith("IDEM-")}
    reasons = {r.id: r.reason for r in report.rules if r.id in idem and r.verdict != Verdict.PASS}
    assert all(v == Verdict.PASS for v in idem.values()), reasons
