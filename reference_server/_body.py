"""Read a request body as it streams in, refusing it (413) as soon as it exceeds the byte limit."""
from __future__ import annotations

import anyio
from starlette.requests import ClientDisconnect, Request

from .errors import PAYLOAD_TOO_LARGE, ApiError

# A client that stops sending mid-body (a Content-Length that lies, a slowloris) would hold a
# worker forever: after this many idle seconds the body is refused with 408 and the connection closed.
BODY_IDLE_TIMEOUT_S = 3.0

# The rest of an over-limit body is never read: closing the connection tells the client to stop.
_CLOSE = {"Connection": "close"}


def _too_large(max_bytes: int, detail: str) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE,
                    f"request body exceeds the limit of {max_bytes} bytes ({detail})",
                    headers=_CLOSE, max_bytes=max_bytes)


async def read_body(request: Request, max_bytes: int, idle_timeout: float = BODY_IDLE_TIMEOUT_S) -> bytes:
    """Return the whole body, or raise ``payload_too_large`` once more than ``max_bytes`` arrived.

    A ``Content-Length`` over the limit is refused before reading anything; a chunked body (no
    length) is refused as soon as the running total passes the limit, without buffering the rest.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length > max_bytes:
            raise _too_large(max_bytes, f"Content-Length is {length}")
    chunks: list[bytes] = []
    received = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise ApiError(408, "request_timeout", f"no body bytes arrived for {idle_timeout:g} seconds; "
                           f"{received} bytes received", headers=_CLOSE) from None
        except ClientDisconnect:
            # nobody is left to read an answer; a 400 (not a 500) keeps the logs honest
            raise ApiError(400, "client_disconnected", "the client closed the connection before the "
                           "body was complete", headers=_CLOSE) from None
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes, f"more than {max_bytes} bytes received")
        if chunk:
            chunks.append(chunk)
    return b"".join(chunks)
