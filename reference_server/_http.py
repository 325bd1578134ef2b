"""The HTTP/1.1 protocol the reference server runs on, pinned whatever else is installed.

uvicorn's httptools protocol (llhttp, in C) with two changes. A request the parser refuses is
answered with the server's JSON error shape (``{"error": "malformed_request", "message": ...}``, 400)
instead of uvicorn's plain-text line, so every malformed request gets the same kind of answer from the
HTTP layer as from the application; and a head longer than ``MAX_HEAD_BYTES`` gets a JSON 431. The
connection is then closed, as uvicorn does: after a framing error nothing that follows on it can be
trusted to start a request.

Why httptools and not h11 (uvicorn's pure-Python parser, which this server ran on until round 13 of
issue 18): the embedded server shares the kit's process and its interpreter lock, and h11's parsing
was a fifth of the server's time there (docs/performance.md). llhttp is also the stricter of the
two on malformed framing (a Content-Length beside a Transfer-Encoding, a chunk size that is no
number, an obsolete folded header, a bare LF: each a 400 where h11 closed the connection without an
answer or accepted it); ``tests/test_server_http.py`` holds the server to a 4xx or a closed
connection, never a 5xx or a hang, for each of those.
"""
from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import HEADERS_TOO_LARGE, JSON_TYPE, MALFORMED_REQUEST
from .settings import MAX_HEAD_BYTES

_MALFORMED = orjson.dumps({
    "error": MALFORMED_REQUEST,
    "message": "the request is not valid HTTP/1.1 (its request line, headers or body framing could not be "
               "parsed); the connection is closed",
})
_HEAD_TOO_LARGE = orjson.dumps({
    "error": HEADERS_TOO_LARGE,
    "message": f"the request line and headers are longer than {MAX_HEAD_BYTES} bytes; the connection is closed",
})


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools turns it into the HttpParserError uvicorn answers."""


class JSONErrorProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol: JSON for an unparseable request (400) or an overlong head (431)."""

    _in_head = False  # between the first byte of a request and the end of its headers
    _head_bytes = 0  # the current head's URL and headers, as the parser hands them over
    _streamed = 0  # bytes of chunks that fell wholly inside the current head (a head that never ends)
    _requests = 0
    _too_large = False

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes, self._streamed = True, 0, 0
        self._requests += 1
        super().on_message_begin()

    def _grew(self, n: int) -> None:
        """`n` more bytes of the current head; past the bound, the parser is stopped (-> 431)."""
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_large = True
            raise _HeadTooLarge

    def on_url(self, url: bytes) -> None:  # called with each piece of the URL as it arrives
        self._grew(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:  # called once a header has ended
        self._grew(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        was_in_head, requests = self._in_head, self._requests
        super().data_received(data)
        # A header still being sent is kept by httptools, unseen, until it ends: counted here, only
        # when the whole chunk fell inside one head (no request began or ended in it), so the end of
        # one request's body and the start of the next is never counted.
        if was_in_head and self._in_head and requests == self._requests:
            self._streamed += len(data)
            if self._streamed > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._too_large = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:  # uvicorn calls it on httptools.HttpParserError
        if self._too_large:
            self._send_error(b"431 Request Header Fields Too Large", _HEAD_TOO_LARGE)
        else:
            self._send_error(b"400 Bad Request", _MALFORMED)

    def _send_error(self, status: bytes, body: bytes) -> None:
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: " + JSON_TYPE.encode() + b"\r\ncontent-length: "
                    + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()
