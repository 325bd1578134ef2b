"""A raw HTTP/1.1 request whose body streams in over a real socket, watching for an early answer.

SIZE-03 needs what httpx cannot show: how much of an over-limit body had been sent when the
target answered. Between chunks the socket is polled; once the answer starts arriving the kit
stops sending. No wall-clock threshold decides anything: "prompt" means the answer came before
the whole body was sent.
"""
from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit


@dataclass
class StreamOutcome:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    bytes_sent: int = 0
    """Body bytes handed to the socket before the answer was seen (or the sending stopped)."""
    body_complete: bool = False
    """Whether the whole body (and, chunked, its last chunk) was sent."""
    error: str | None = None
    elapsed_s: float = 0.0


def _connect(base_url: str, timeout: float, verify: bool | str) -> tuple[socket.socket, str]:
    parts = urlsplit(base_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sock = socket.create_connection((host, port), timeout=timeout)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if verify is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock, server_hostname=host)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return sock, netloc


def _readable(sock: socket.socket) -> bool:
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    r, _, _ = select.select([sock], [], [], 0)
    return bool(r)


def _parse_head(raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return None, {}, b""
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def _dechunk(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return out
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return out
        if size == 0:
            return out
        out += data[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def _read_answer(sock: socket.socket, deadline: float) -> tuple[int | None, dict[str, str], bytes, str | None]:
    buf = b""
    error = None
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, socket.timeout):
            error = "no complete answer before the timeout"
            break
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if not chunk:
            break
        buf += chunk
        status, headers, rest = _parse_head(buf)
        if status is None:
            continue
        if "content-length" in headers and len(rest) >= int(headers["content-length"] or 0):
            break
        if headers.get("transfer-encoding", "").lower() == "chunked" and rest.endswith(b"0\r\n\r\n"):
            break
    status, headers, rest = _parse_head(buf)
    if status is not None and headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    if status is not None:
        error = None
    elif error is None:
        error = "the connection closed without an answer" if not buf else "the answer could not be parsed"
    return status, headers, rest, error


def stream_request(base_url: str, method: str, path: str, headers: dict[str, str], chunks: Iterator[bytes],
                   *, chunked: bool, content_length: int | None = None, timeout: float = 10.0,
                   verify: bool | str = True) -> StreamOutcome:
    """Send the body chunk by chunk; stop as soon as the target starts answering."""
    out = StreamOutcome()
    start = time.monotonic()
    deadline = start + timeout
    sock, netloc = _connect(base_url, timeout, verify)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "connection",
                                                                          "content-length", "transfer-encoding")]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {content_length}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        answered_early = False
        try:
            for chunk in chunks:
                if _readable(sock):
                    answered_early = True
                    break
                if time.monotonic() > deadline:
                    out.error = "the target neither read the body nor answered before the timeout"
                    break
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                out.bytes_sent += len(chunk)
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
                out.body_complete = True
        except (TimeoutError, socket.timeout):
            out.error = "the target stopped reading the body without answering before the timeout"
        except OSError:
            pass  # the target closed the connection mid-body: its answer may be waiting to be read
        if answered_early:
            out.body_complete = False
        status, hdrs, body, err = _read_answer(sock, deadline)
        out.status, out.headers, out.body = status, hdrs, body
        if status is not None:
            out.error = None
        elif out.error is None:
            out.error = err
    finally:
        out.elapsed_s = round(time.monotonic() - start, 3)
        try:
            sock.close()
        except OSError:
            pass
    return out
