"""Broken answers a target may send. One that never ends: an endless chunked body, a body that drips
a byte at a time, an answer far over any sane size. The kit reads at most `target.max_response_bytes` of a body
and waits at most `target.timeout` seconds after its headers for the rest; the check is an ERROR
that says which, the evidence keeps what came, and the kit's memory stays bounded. Served over a
real loopback socket (uvicorn in a thread) and in process. One nested deeper than Python's parser
goes: it is not JSON the kit can read, never a traceback."""
from __future__ import annotations

import asyncio
import resource
import socket
import time

from starlette.responses import StreamingResponse

from conformance import Verdict
from conformance._rawhttp import exchange
from conftest import run_kit, run_kit_socket, verdicts
from reference_server import create_app, start_in_thread

LIMIT = 1024 * 1024  # 1 MiB: the test reads little before the kit must stop


def _broken(tmp_path, mode: str, after: int = 1):
    """The reference server, except that POST /orders/batch answers 200 with a body that never ends,
    from its `after`-th call on (the first is the preflight's)."""
    inner = create_app(str(tmp_path / "ref.db"))
    calls = [0]

    # "Never ends" as far as the kit can tell: 64 times its limit, or a minute of dripping. (Truly
    # endless generators would outlive the test: uvicorn drops writes to a closed connection
    # without telling the app.)
    async def endless():
        yield b'{"results": ['
        chunk = b'{"id": "x", "status": "ok"},' * 2000
        for _ in range(64 * LIMIT // len(chunk)):
            yield chunk

    async def deep():
        yield b"[" * 200_000 + b"]" * 200_000

    async def drip():
        yield b'{"results": ['
        for _ in range(300):
            await asyncio.sleep(0.2)
            yield b" "

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/orders/batch":
            calls[0] += 1
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/orders/batch" \
                and calls[0] > after:
            body = StreamingResponse({"endless": endless, "drip": drip, "deep": deep}[mode](),
                                     media_type="application/json")
            await body(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


def _outcome(report, rule: str):
    rule = next(r for r in report.rules if r.id == rule)
    return rule, rule.checks[0]


def test_an_endless_body_is_cut_at_the_limit_and_named(tmp_path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    report = run_kit_socket(_broken(tmp_path, "endless"), rules=["CORE-01"],
                            overrides={"target": {"max_response_bytes": LIMIT}})
    assert time.monotonic() - start < 60
    rule, check = _outcome(report, "CORE-01")
    assert rule.verdict == Verdict.ERROR, (rule.verdict, rule.reason)
    assert f"the answer's body passed {LIMIT} bytes (target.max_response_bytes)" in check.reason, check.reason
    cut = [e for e in check.evidence if e.error and "AnswerTooLong" in e.error]
    assert cut and cut[-1].status == 200  # what came (the status, the headers) stays evidence
    # Bounded: far less than the gigabytes an unbounded read takes in the same time.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB on Linux


def test_a_body_that_drips_forever_ends_at_the_timeout(tmp_path):
    start = time.monotonic()
    report = run_kit_socket(_broken(tmp_path, "drip"), rules=["CORE-01"], overrides={"target": {"timeout": 1.5}})
    took = time.monotonic() - start
    rule, check = _outcome(report, "CORE-01")
    assert rule.verdict == Verdict.ERROR, (rule.verdict, rule.reason)
    assert "did not end within 1.5s of its headers (target.timeout" in check.reason, check.reason
    assert took < 30, took  # each read came within the read timeout: only the body's deadline ends it


def test_in_process_the_same_bound_applies(tmp_path):
    # In process, httpx's ASGITransport collects the app's whole answer before the kit sees any of
    # it: the bound decides the verdict, but it cannot stop an app whose answer truly never ends.
    report = run_kit(_broken(tmp_path, "endless"), rules=["CORE-01"], overrides={"target": {"max_response_bytes": LIMIT}})
    rule, check = _outcome(report, "CORE-01")
    assert verdicts(report)["CORE-01"] == Verdict.ERROR
    assert f"passed {LIMIT} bytes" in check.reason, check.reason


def test_a_preflight_answer_that_never_ends_makes_the_target_unusable(tmp_path):
    report = run_kit_socket(_broken(tmp_path, "endless", after=0), rules=["CORE-01"],
                            overrides={"target": {"max_response_bytes": LIMIT}})
    assert report.preflight["ok"] is False
    assert f"the answer's body passed {LIMIT} bytes" in report.preflight["reason"], report.preflight
    assert report.exit_code() == 3


def test_the_raw_layer_stops_reading_at_the_limit(tmp_path):
    server = start_in_thread(app=_broken(tmp_path, "endless", after=0))
    try:
        host, port = server.base_url.rsplit("//", 1)[1].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        body = b'{"operations": []}'
        out = exchange(sock, "POST", "/orders/batch", f"{host}:{port}",
                       [("Content-Type", "application/json")], [body], timeout=20, max_body=LIMIT)
    finally:
        server.stop()
    assert out.status == 200
    assert out.error and f"passed {LIMIT} bytes" in out.error
    assert LIMIT < len(out.body) <= LIMIT + 256 * 1024


def test_a_preflight_answer_nested_too_deep_is_one_clear_line(tmp_path):
    report = run_kit(_broken(tmp_path, "deep", after=0), rules=["CORE-01"])
    assert report.preflight["ok"] is False
    assert "not JSON the kit can read (invalid, or nested deeper than about 1,000 levels)" in report.preflight["reason"]
    assert report.exit_code() == 3


def test_a_check_answer_nested_too_deep_is_judged_not_a_crash(tmp_path):
    report = run_kit(_broken(tmp_path, "deep"), rules=["CORE-01", "CORE-06"])
    got = verdicts(report)
    # The target answered something that is not a JSON document the kit (or most clients) can read:
    # CORE-01 wants JSON; whatever the verdict, it is one the checks reached, with a reason.
    for rid in ("CORE-01", "CORE-06"):
        rule = next(r for r in report.rules if r.id == rid)
        assert rule.verdict in (Verdict.FAIL, Verdict.ERROR) and rule.reason, (rid, rule.verdict, rule.reason)
        assert "did not run" not in rule.reason, rule.reason
    assert got["CORE-01"] == Verdict.FAIL


def test_an_answer_that_is_not_readable_http_is_one_clear_line(tmp_path):
    # Headers over h11's 64 KiB: connected, answered, but nothing an HTTP/1.1 client can read.
    import threading

    import conformance
    from conftest import reference_profile

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Big: " + b"a" * 200_000
                                 + b"\r\nContent-Length: 2\r\n\r\n{}")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        report = conformance.run(reference_profile(f"http://127.0.0.1:{port}"), rules=["CORE-01"])
    finally:
        listener.close()
    assert report.preflight["ok"] is False and report.exit_code() == 3
    assert "took the connection but gave no readable HTTP answer" in report.preflight["reason"], report.preflight


def test_result_ids_that_are_objects_are_judged_not_a_crash(tmp_path):
    # {"id": {"value": "bs-..."}} where an id belongs: it matches no item sent, so CORE-02 FAILs
    # with its evidence (the kit used to stop at the preflight on "unhashable type: 'dict'").
    import json as _json

    from mutants._base import read_body

    inner = create_app(str(tmp_path / "ref.db"))

    async def app(scope, receive, send):
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/orders/batch"):
            await inner(scope, receive, send)
            return
        body = await read_body(receive)
        ops = _json.loads(body or b"{}").get("operations") or []
        answer = {"results": [{"id": {"value": op.get("id")} if isinstance(op, dict) else None, "status": "ok"}
                              for op in ops]}
        raw = _json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})

    report = run_kit(app, rules=["CORE-02"])
    assert report.preflight["ok"] is True, report.preflight
    rule = next(r for r in report.rules if r.id == "CORE-02")
    assert rule.verdict == Verdict.FAIL, (rule.verdict, rule.reason)
    assert "unhashable" not in rule.reason
