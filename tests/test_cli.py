"""The CLI: exit codes and one clear line on stderr for usage and profile errors, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conformance.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "conformance", *args], capture_output=True, text=True, timeout=120)


def test_misspelt_profile_key_exits_2_naming_it(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("target:\n  base_url: http://127.0.0.1:9\n  timout: 3\nendpoints:\n  batch: {path: /b}\n"
                 "items:\n  valid: [{a: 1}]\n")
    r = run_cli("run", "--profile", str(p), "--report-dir", str(tmp_path / "r"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "timout" in lines[0] and "line 3" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize("args", [
    ["run", "not a url"],
    ["run", "http://127.0.0.1:99999"],
    ["run", "--profile", "/nonexistent/profile.yaml"],
    ["run", "http://127.0.0.1:9", "--class", "NOPE"],
    ["run", "http://127.0.0.1:9", "--rule", "CORE-99"],
])
def test_usage_errors_exit_2_with_one_line(args, capsys, tmp_path):
    code = main(args + ["--report-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("batchspec: ")


def test_rules_lists_the_catalogue(capsys):
    assert main(["rules", "--class", "size"]) == 0
    out = capsys.readouterr().out
    assert "SIZE-01" in out and "CORE-01" not in out


def test_init_writes_a_valid_starter_profile(tmp_path, capsys):
    from conformance import load_profile

    path = tmp_path / "batchspec.yaml"
    assert main(["init", str(path)]) == 0
    assert load_profile(path, env={}).get("endpoints.batch.path")
    assert main(["init", str(path)]) == 2  # never overwrites silently


def test_unreachable_target_exits_3_with_one_line(tmp_path):
    r = run_cli("run", "http://127.0.0.1:9", "--report-dir", str(tmp_path))
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_then_run_against_it_exits_0(tmp_path):
    import time

    import httpx

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "conformance", "serve", "--port", str(port),
                               "--db", str(tmp_path / "ref.db")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = run_cli("run", f"http://127.0.0.1:{port}", "--class", "CORE,HTTP,PART,SIZE,PAR", "-q",
                    "--report-dir", str(tmp_path / "reports"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "reports" / "report.json").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_plain_pytest_runs_the_same_engine(tmp_path):
    from reference_server import start_in_thread

    with start_in_thread(db_path=str(tmp_path / "ref.db")) as server:
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "conformance.plugin", "--pyargs", "conformance", "-p", "no:xdist",
                            "--target", server.base_url, "--class", "CORE", "--report-dir", str(tmp_path / "r"), "-q"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    import json

    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {x["id"]: x["verdict"] for x in report["rules"]}["CORE-01"] == "PASS"


def test_a_password_in_the_target_url_stays_out_of_output_and_reports(tmp_path):
    r = run_cli("run", "http://someone:hunter2-secret@127.0.0.1:9", "--report-dir", str(tmp_path))
    assert r.returncode == 3
    assert "hunter2-secret" not in r.stdout + r.stderr
    for f in tmp_path.iterdir():
        assert "hunter2-secret" not in f.read_text(), f.name


def test_the_cli_limits_malloc_arenas_unless_the_environment_says(monkeypatch):
    """`batchspec run` caps glibc's malloc arenas at 2 before any thread starts (docs/performance.md,
    round 6: a third less peak memory); a MALLOC_ARENA_MAX the user set wins, and a library caller's
    process is never touched (only the CLI calls it)."""
    import ctypes

    from conformance import _engine

    calls: list[tuple[int, int]] = []

    class FakeLibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    _engine.limit_malloc_arenas()
    assert calls == [(-8, 2)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    _engine.limit_malloc_arenas()
    assert calls == [(-8, 2)]
    import inspect

    from conformance import cli

    assert "limit_malloc_arenas()" in inspect.getsource(cli.cmd_run)
    assert "limit_malloc_arenas" not in inspect.getsource(_engine.run)


def test_the_cli_runs_the_garbage_collector_less_and_puts_it_back(tmp_path, monkeypatch, capsys):
    """The CLI raises the collector's first threshold for its run and freezes what the start
    allocated once the preflight has passed (issue 18: ~0.3 s of collections per embedded run), and
    puts both back when the run is over; the engine itself (a library caller's process) never does."""
    import gc
    import inspect

    from conformance import _engine

    calls: list[tuple] = []
    real_freeze, real_unfreeze = gc.freeze, gc.unfreeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append(("freeze", gc.get_threshold()[0])), real_freeze())[1])
    monkeypatch.setattr(gc, "unfreeze", lambda: (calls.append(("unfreeze",)), real_unfreeze())[1])
    before = gc.get_threshold()
    code = main(["run", "--rule", "CORE-01", "--report-dir", str(tmp_path / "r"), "-q"])
    assert code == 0, capsys.readouterr()
    assert calls == [("freeze", _engine.GC_THRESHOLD0), ("unfreeze",)], calls
    assert gc.get_threshold() == before
    assert "tune_gc" not in inspect.getsource(_engine.run) and "freeze" not in inspect.getsource(_engine.run)


def test_the_embedded_server_stops_while_the_reports_are_written(tmp_path, monkeypatch, capsys):
    """The in-thread server's graceful stop (~0.2 s of uvicorn's polling) overlaps the rendering of the
    reports (issue 18): the CLI asks it to stop once the last check has ended and before report.json
    exists, and waits for it before exiting; a stop the CLI asked for is not a server failure."""
    import reference_server
    from reference_server import server as server_mod

    started: list[server_mod.RunningServer] = []
    asked: list[bool] = []
    real = server_mod.start_in_thread

    def spy(*args, **kwargs):
        started.append(real(*args, **kwargs))
        request = started[-1].request_stop

        def request_stop() -> None:
            asked.append((tmp_path / "r" / "report.json").exists())
            request()

        started[-1].request_stop = request_stop  # type: ignore[method-assign]
        return started[-1]

    monkeypatch.setattr(reference_server, "start_in_thread", spy, raising=False)
    code = main(["run", "--rule", "CORE-01", "--report-dir", str(tmp_path / "r"), "-q"])
    out = capsys.readouterr()
    assert code == 0, out
    assert len(started) == 1 and asked[:1] == [False], asked  # (stop() asks again, after the reports)
    assert not started[0].thread.is_alive(), "the CLI did not wait for its server to stop"
    assert started[0].failure() is None


def test_a_server_asked_to_stop_is_not_a_failure():
    """RunningServer.request_stop() returns at once; stop() then waits; failure() stays None (the CLI
    reads it after the run: a server it asked to stop did not end on its own)."""
    from reference_server import start_in_thread

    server = start_in_thread()
    server.request_stop()
    server.thread.join(10)
    assert not server.thread.is_alive()
    assert server.failure() is None
    server.stop()  # after request_stop: returns, nothing left to wait for
