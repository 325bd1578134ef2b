"""The kit's own promises (SPEC §5): timeouts, exit codes, redaction, no cross-host redirect, no other host."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import conformance
from conformance import Verdict
from conftest import reference_profile, run_kit

SECRET = "s3cr3t-token-7f1d9a"


class _Listener:
    """A loopback TCP listener that accepts connections, counts them, and never answers."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(conn)  # held open, never answered

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_silent_target_gives_error_within_the_timeout():
    silent = _Listener()
    try:
        report = conformance.run(reference_profile(f"http://127.0.0.1:{silent.port}", {"target": {"timeout": 0.5}}),
                                 classes=["CORE"])
    finally:
        silent.close()
    assert silent.accepted >= 1
    assert report.preflight["ok"] is False and "did not answer" in report.preflight["reason"]
    assert report.exit_code() == 3
    core = [r for r in report.rules if r.cls == "CORE" and r.verdict != Verdict.PENDING]
    assert core and all(r.verdict == Verdict.ERROR for r in core)


def test_refused_connection_exits_3_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", "http://127.0.0.1:9", "-q",
                           "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def _leaky(app: Any) -> Any:
    """A failing server that also echoes the caller's Authorization header into every batch response."""
    from mutants._base import Call, Rewrite

    def fn(call: Call) -> None:
        doc = call.response_json()
        if call.status == 200 and isinstance(doc, dict) and len(doc.get("results") or []) > 1:
            doc["results"].pop()  # CORE-02 FAILs, so the report carries evidence (the preflight's one item keeps its)
            doc["debug"] = {"authorization": call.header("authorization")}
            call.set_response_json(doc)
    return Rewrite(app, response=fn)


def test_token_never_appears_in_reports_or_output(tmp_path, monkeypatch, capfd):
    from reference_server import create_app

    monkeypatch.setenv("BATCHSPEC_TOKEN", SECRET)  # the bundled profile reads it through ${ENV} interpolation
    good = run_kit(create_app(str(tmp_path / "a.db")), classes=["CORE"], report_dir=str(tmp_path / "ref"))
    bad = run_kit(_leaky(create_app(str(tmp_path / "b.db"))), classes=["CORE"], report_dir=str(tmp_path / "bad"))
    assert good.exit_code() == 0
    assert bad.exit_code() == 1  # the leaky server failed, so its evidence is in the reports
    out, err = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm")]
    assert any(p.name == "report.json" for p in written)
    for p in written:
        assert SECRET not in p.read_text(encoding="utf-8", errors="replace"), f"the token leaked into {p}"
    assert SECRET not in out and SECRET not in err
    evidence = json.dumps([r.to_dict() if hasattr(r, "to_dict") else str(r) for r in bad.rules], default=str)
    assert SECRET not in evidence


class _Redirector(BaseHTTPRequestHandler):
    location = ""

    def _redirect(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.send_response(307)
        self.send_header("Location", self.location + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args: Any) -> None:
        pass


def test_redirect_to_another_host_is_not_followed():
    other = _Listener("127.0.0.2")
    handler = type("H", (_Redirector,), {"location": f"http://127.0.0.2:{other.port}"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = conformance.run(reference_profile(f"http://127.0.0.1:{server.server_address[1]}",
                                                   {"target": {"timeout": 1}}), classes=["CORE"])
    finally:
        server.shutdown()
        server.server_close()
        other.close()
    assert other.accepted == 0, "the kit followed a redirect to another host"
    assert report.preflight["ok"] is False
    assert "redirect to another host not followed" in json.dumps(report.preflight["evidence"])


def test_kit_connects_to_nothing_but_the_target(monkeypatch):
    from reference_server import start_in_thread

    server = start_in_thread()
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    contacted: set[tuple[str, int]] = set()
    resolved: set[str] = set()
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    # Threads already running before the run (an earlier test's server delivering a callback late,
    # in a sequential run of the suite) are not the kit's; the main thread and any thread the run
    # starts are.
    earlier = {t for t in threading.enumerate() if t is not threading.main_thread()}

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and threading.current_thread() not in earlier:
            contacted.add((str(address[0]), int(address[1])))
        return real_connect(self, address)

    def getaddrinfo(h: Any, *a: Any, **kw: Any) -> Any:
        if threading.current_thread() not in earlier:
            resolved.add(str(h))
        return real_getaddrinfo(h, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        report = conformance.run(reference_profile(server.base_url, {"rob": {"max_examples": 3, "seed": 1}}),
                                 classes=["ROB"])
    finally:
        monkeypatch.undo()
        server.stop()
    assert report.exit_code() == 0
    assert contacted and contacted <= {(host, int(port))}, f"the kit connected elsewhere: {contacted}"
    assert resolved <= {host}, f"the kit resolved other names: {resolved}"


def test_checks_judge_with_expect_never_a_bare_assert():
    """The engine runs the suites with --assert=plain (no rewriting to parse and recompile on each
    run): that loses nothing only while no check uses a bare assert, whose failure would then carry
    no message. The checks say what they expected and saw through expect()."""
    import ast
    from pathlib import Path

    suites = Path(conformance.__file__).parent / "suites"
    found = [f"{path.name}:{node.lineno}" for path in sorted(suites.glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not found, f"bare asserts in the suites (use expect()): {found}"
