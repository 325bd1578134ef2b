"""The kit's one raw HTTP/1.1 layer: h11 over a socket, for what an ordinary client cannot do.

httpx cannot send a body whose Content-Length lies, stop half-way through a body, drop the
connection before reading the answer, or tell how much of a streamed body had been sent when the
target answered. Every check that needs one of these goes through `Target.raw` (conformance/_client.py),
which builds the URL (base path, path template, the endpoint's fixed query), the headers and the
TLS setting exactly as for every other exchange, and keeps the exchange as evidence; this module
only frames bytes (h11 does the HTTP/1.1 framing and parsing) and watches the socket.

No wall-clock threshold decides anything here: "an early answer" means the answer arrived before
the whole body was sent.
"""
from __future__ import annotations

import json
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import h11

# An answer is read up to this many bytes of body: a broken target's may never end
# (target.max_response_bytes; conformance._client reads httpx answers with the same bound).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass
class RawOutcome:
    """What came back on a raw exchange (or what did not)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    bytes_sent: int = 0
    """Body bytes handed to the socket before the answer was seen (or the sending stopped)."""
    body_complete: bool = False
    """Whether the whole body (and, chunked, its last chunk) was sent."""
    closed: bool = False
    """The target closed the connection without an answer."""
    hung: bool = False
    """Neither an answer nor a close before the timeout."""
    too_long: bool = False
    """The answer's body passed the byte limit: `body` holds its start, the rest was not read."""
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The answer's body as JSON, or None."""
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for `verify` as `tls_verify` resolves it: False, True or a CA bundle path."""
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if verify is False:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(scheme: str, host: str, port: int | None, *, timeout: float, verify: bool | str) -> socket.socket:
    port = port or (443 if scheme == "https" else 80)
    sock = socket.create_connection((host, port), timeout=timeout)
    if scheme == "https":
        sock = ssl_context(verify).wrap_socket(sock, server_hostname=host)
    return sock


def _answered(sock: socket.socket, conn: h11.Connection) -> bool:
    """Whether the target has started answering (or closed): bytes it sent go to h11's buffer.
    A readable TLS socket may only hold a session ticket, so readability alone decides nothing."""
    if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True  # the connection broke: reading the answer says what happened
    finally:
        sock.setblocking(True)
    conn.receive_data(data)  # b"" marks the close
    return True


def _read_answer(conn: h11.Connection, sock: socket.socket, deadline: float, out: RawOutcome,
                 max_body: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
    """Feed the socket to h11 until the answer is complete, the target closes, the deadline, or
    more than `max_body` bytes of body."""
    body = bytearray()
    got_any = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if out.status is None:
                out.error = "the answer could not be parsed" if got_any else "the connection closed without an answer"
                out.closed = not got_any
            elif not out.error:
                out.error = f"the answer was cut off: {exc}"
            break
        if event is h11.NEED_DATA:
            left = deadline - time.monotonic()
            if left <= 0:
                out.hung = out.status is None and not got_any
                out.error = out.error or "no complete answer before the timeout"
                break
            sock.settimeout(max(0.05, left))
            try:
                data = sock.recv(65536)
            except (TimeoutError, socket.timeout):
                out.hung = out.status is None and not got_any
                out.error = out.error or "no complete answer before the timeout"
                break
            except OSError:
                data = b""
            got_any = got_any or bool(data)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            out.status = event.status_code
            out.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                out.too_long = True
                out.error = f"the answer's body passed {max_body} bytes (target.max_response_bytes); the rest was not read"
                break
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            if out.status is None:
                out.closed = True
                out.error = out.error or "the connection closed without an answer"
            break
    out.body = bytes(body)


def _close(sock: socket.socket, out: RawOutcome, start: float) -> None:
    """An exchange is over: its time, and the socket closed (whatever state it is in)."""
    out.elapsed_s = round(time.monotonic() - start, 3)
    try:
        sock.close()
    except OSError:
        pass


def send_head(sock: socket.socket, method: str, target: str, host: str, headers: list[tuple[str, str]],
              declared_length: int, timeout: float) -> h11.Connection:
    """Send only a request's head, declaring a body of `declared_length` bytes: the target waits for
    the body until `send_body` sends it (a slow client; the connection is never cut mid-body)."""
    hdrs = [(k, v) for k, v in headers if k.lower() not in ("host", "content-length", "transfer-encoding",
                                                            "connection")]
    hdrs = [("Host", host), *hdrs, ("Connection", "close"), ("Content-Length", str(declared_length))]
    conn = h11.Connection(h11.CLIENT)
    sock.settimeout(timeout)
    sock.sendall(conn.send(h11.Request(method=method, target=target, headers=hdrs)))
    return conn


def send_body(sock: socket.socket, conn: h11.Connection, body: bytes, *, timeout: float,
              max_body: int = DEFAULT_MAX_RESPONSE_BYTES) -> RawOutcome:
    """The rest of a request begun by `send_head`: its body, then its answer (closes the socket)."""
    out = RawOutcome()
    start = time.monotonic()
    try:
        sock.settimeout(timeout)
        try:
            sock.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            out.bytes_sent, out.body_complete = len(body), True
        except OSError:
            pass  # the target gave up on the body first: its answer (a 408) may be waiting
        _read_answer(conn, sock, start + timeout, out, max_body)
        if out.status is not None and not out.too_long:
            out.error = None  # an answer came
    except h11.LocalProtocolError as exc:
        out.error = f"the request could not be framed: {exc}"
    finally:
        _close(sock, out, start)
    return out


def exchange(sock: socket.socket, method: str, target: str, host: str, headers: list[tuple[str, str]],
             chunks: Iterable[bytes], *, framing: str = "content-length", declared_length: int | None = None,
             half_close: bool = False, read_answer: bool = True, timeout: float = 10.0,
             max_body: int = DEFAULT_MAX_RESPONSE_BYTES) -> RawOutcome:
    """Send one request on `sock` and read its answer.

    framing: "content-length" (declared_length, or the real length of `chunks` joined) or "chunked".
    A declared length larger than the bytes sent is a lying length; `half_close` shuts the write side
    after the bytes (a cut body); `read_answer=False` closes the connection without reading anything.
    Between chunks the socket is polled: once an answer starts arriving the kit stops sending.
    """
    out = RawOutcome()
    start = time.monotonic()
    deadline = start + timeout
    if framing == "content-length" and declared_length is None:
        chunks = [b"".join(chunks)]
        declared_length = len(chunks[0])
    hdrs = [(k, v) for k, v in headers if k.lower() not in ("host", "content-length", "transfer-encoding",
                                                            "connection")]
    hdrs = [("Host", host), *hdrs, ("Connection", "close"),
            ("Transfer-Encoding", "chunked") if framing == "chunked" else ("Content-Length", str(declared_length))]
    conn = h11.Connection(h11.CLIENT)
    try:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        sock.sendall(conn.send(h11.Request(method=method, target=target, headers=hdrs)))
        answered_early = False
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if read_answer and _answered(sock, conn):
                    answered_early = True
                    break
                if time.monotonic() > deadline:
                    out.error = "the target neither read the body nor answered before the timeout"
                    break
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(conn.send(h11.Data(data=chunk)))
                out.bytes_sent += len(chunk)
            else:
                if framing == "chunked" or out.bytes_sent == declared_length:
                    sock.sendall(conn.send(h11.EndOfMessage()))
                    out.body_complete = True
        except (TimeoutError, socket.timeout):
            out.error = "the target stopped reading the body without answering before the timeout"
        except OSError:
            pass  # the target closed the connection mid-body: its answer may be waiting to be read
        if answered_early:
            out.body_complete = False
        if half_close:
            try:
                # Still able to read what the target says. On TLS the TCP write side is shut under the
                # TLS session (SSLSocket.shutdown would drop the session and read raw records).
                socket.socket.shutdown(sock, socket.SHUT_WR)
            except OSError:
                pass
        if read_answer:
            _read_answer(conn, sock, deadline, out, max_body)
            if out.status is not None and not out.too_long:
                out.error = None  # an answer came: what the checks judge is there
    except h11.LocalProtocolError as exc:
        out.error = f"the request could not be framed: {exc}"
    finally:
        _close(sock, out, start)
    return out
