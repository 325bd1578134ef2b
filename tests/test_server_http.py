"""The reference server's HTTP layer: requests that are not valid HTTP/1.1, over a real socket.

The server runs on a pinned protocol (reference_server/_http.py: uvicorn's httptools protocol with
JSON errors). Each raw request below must get a 4xx with the server's JSON error shape, or a closed
connection; never a 5xx, a hang, or an answer that the next request on the connection inherits.
A request that is valid but odd (a folded header is not; a 50 KB head is) is answered by the
application as usual.
"""
from __future__ import annotations

import json
import socket
import time

import jsonschema
import pytest

from reference_server import start_in_thread
from reference_server.settings import MAX_HEAD_BYTES
from reference_server._schemas import load_schema
from reference_server.server import UVICORN_OPTIONS

ERROR_SCHEMA = load_schema("error.schema.json")
AUTH = b"Authorization: Bearer http-layer\r\n"

# name -> raw bytes; every one is refused by the HTTP parser (400 malformed_request) or closed.
MALFORMED = {
    "garbage request line": b"HELLO\r\n\r\n",
    "control character in the method": b"G(T /orders HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET /orders HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n",
    "space before the colon": b"GET /orders HTTP/1.1\r\nHost : x\r\n\r\n",
    "Content-Length beside Transfer-Encoding": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two Content-Lengths": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "negative Content-Length": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "Content-Length that is no number": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "Content-Length beyond 64 bits": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "chunk size that is no number": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"zz\r\nhello\r\n0\r\n\r\n",
    "chunk size beyond 64 bits": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"ffffffffffffffffff\r\n[]\r\n0\r\n\r\n",
    "chunk without its CRLF": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]XX0\r\n\r\n",
    "NUL in a chunk extension": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\x00\r\n[]\r\n0\r\n\r\n",
    "unknown Transfer-Encoding": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "chunked not last": b"POST /orders/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "NUL in a header value": b"GET /orders HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "obsolete folded header": b"GET /orders HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    "bare CR in the headers": b"GET /orders HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
    "bare LF line ends": b"GET /orders HTTP/1.1\nHost: x\n\n",
    "control character in the path": b"GET /ord\x01ers HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/2 preface on an HTTP/1.1 port": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/0.9 request": b"GET /\r\n",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from reference_server import create_app

    running = start_in_thread(app=create_app(str(tmp_path_factory.mktemp("http") / "ref.db")))
    host, port = running.base_url.removeprefix("http://").rsplit(":", 1)
    yield host, int(port)
    running.stop()


def _exchange(address: tuple[str, int], raw: bytes, *, shut: bool = True, timeout: float = 5.0) -> bytes:
    """Send `raw`, close the sending side, read until the server closes (or `timeout`: a hang fails)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed while the request was still going out
            pass
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                pytest.fail(f"no answer and no close within {timeout} s (a hang); got {data[:200]!r}")
            if not chunk:
                break
            data += chunk
        else:
            pytest.fail(f"the connection stayed open past {timeout} s; got {data[:200]!r}")
    return data


def _status_and_json(data: bytes) -> tuple[int, dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
               for line in head.split(b"\r\n")[1:] if b":" in line}
    assert headers.get(b"content-type", b"").startswith(b"application/json"), data[:300]
    assert b"transfer-encoding" not in headers, "one answer, framed by its Content-Length"
    assert int(headers[b"content-length"]) == len(body), "nothing follows the one answer"
    doc = json.loads(body)
    if status >= 400:
        jsonschema.validate(doc, ERROR_SCHEMA)  # the server's one error shape, from the HTTP layer as from the app
    return status, doc


def test_the_protocol_is_pinned():
    # uvicorn's "auto" would pick whatever happens to be installed; what this module judges is this.
    assert UVICORN_OPTIONS["http"].__name__ == "JSONErrorProtocol"


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_gets_a_json_4xx_or_a_close(server, raw):
    data = _exchange(server, raw)
    if not data:
        return  # closed without an answer: allowed (4xx-or-close), never a hang (checked above)
    status, body = _status_and_json(data)
    assert 400 <= status < 500, data[:300]
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body


def test_parser_refusal_names_the_problem(server):
    status, body = _status_and_json(_exchange(server, MALFORMED["Content-Length beside Transfer-Encoding"]))
    assert (status, body["error"]) == (400, "malformed_request")


@pytest.mark.parametrize("where", ["header", "url", "many headers"])
def test_overlong_head_gets_431(server, where):
    big = b"a" * (MAX_HEAD_BYTES + 1)
    raw = {"header": b"GET /orders/x HTTP/1.1\r\nHost: x\r\n" + AUTH + b"X-Big: " + big + b"\r\n\r\n",
           "url": b"GET /orders/" + big + b" HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
           "many headers": b"GET /orders/x HTTP/1.1\r\nHost: x\r\n" + AUTH
           + b"".join(b"X-%06d: %s\r\n" % (i, b"b" * 90) for i in range(MAX_HEAD_BYTES // 100 + 10)) + b"\r\n"}[where]
    status, body = _status_and_json(_exchange(server, raw))
    assert (status, body["error"]) == (431, "headers_too_large")


def test_a_head_that_never_ends_is_cut_off(server):
    # Sent in pieces and never finished: the server must stop holding it, not wait for its end.
    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(b"GET /orders/x HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        sent, data = 0, b""
        try:
            while sent < 8 * MAX_HEAD_BYTES:
                sock.sendall(b"c" * 4096)
                sent += 4096
                time.sleep(0.001)
        except OSError:
            pass  # closed by the server after its answer
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    assert sent < 8 * MAX_HEAD_BYTES or data, "the server kept reading an endless head"
    status, body = _status_and_json(data)
    assert (status, body["error"]) == (431, "headers_too_large")


def test_a_long_head_under_the_bound_is_served(server):
    # 50 KB of headers is odd, not malformed: the application answers it (here: no such order).
    raw = (b"GET /orders/no-such-order HTTP/1.1\r\nHost: x\r\n" + AUTH
           + b"".join(b"X-%06d: %s\r\n" % (i, b"b" * 90) for i in range(500)) + b"Connection: close\r\n\r\n")
    status, body = _status_and_json(_exchange(server, raw))
    assert status == 404 and body["error"] == "not_found", body


def test_pipelined_requests_with_large_bodies_are_not_counted_as_head(server):
    # The end of one request's body and the start of the next arrive in one read: not a long head.
    body = json.dumps({"operations": [{"id": f"pipe-{i}", "amount": i + 1, "currency": "USD", "note": "n" * 200} for i in range(1000)]})
    one = (b"POST /orders/batch HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body.encode())
    two = b"GET /orders/pipe-1 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Connection: close\r\n\r\n"
    data = _exchange(server, one + two, shut=False, timeout=10)  # half-closing would end the pipeline
    assert data.count(b"HTTP/1.1 200 OK") == 2, [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1")]
    assert b"431" not in data.split(b"\r\n", 1)[0]


class _Transport:
    """Just enough of an asyncio transport for the protocol to be fed by hand."""

    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@pytest.mark.parametrize("split", [1, 4096, MAX_HEAD_BYTES + 1000, "the whole request after 10 bytes"])
def test_a_read_holding_a_body_and_the_next_head_is_not_counted_as_head(split):
    # Deterministic version of the pipelined case: the protocol is fed one read that holds the last
    # `split` bytes of a body and the start of the next request's head (which then ends in a later
    # read). Only bytes of reads that fell wholly inside one head may count towards the 431.
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(scope["path"])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def feed() -> _Transport:
        config = uvicorn.Config(app, **{**UVICORN_OPTIONS, "loop": "asyncio"})
        protocol = UVICORN_OPTIONS["http"](config=config, server_state=ServerState(), app_state={})
        transport = _Transport()
        protocol.connection_made(transport)
        body = b"x" * (3 * MAX_HEAD_BYTES)
        one = b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        two = b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        cut = 10 if isinstance(split, str) else len(one) - split  # the read begins in the head, or in the body
        protocol.data_received(one[:cut])
        protocol.data_received(one[cut:] + two[:20])
        protocol.data_received(two[20:])
        for _ in range(50):
            await asyncio.sleep(0)
        return transport

    transport = asyncio.run(feed())
    assert b"431" not in transport.written and not transport.closed, transport.written[:300]
    assert seen == ["/one", "/two"]


def test_the_server_still_serves_after_the_malformed_requests(server):
    for raw in MALFORMED.values():
        _exchange(server, raw)
    raw = b"GET /orders/none HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Connection: close\r\n\r\n"
    status, body = _status_and_json(_exchange(server, raw))
    assert status == 404 and body["error"] == "not_found"
