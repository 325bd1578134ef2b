"""Read a request body as it streams in, refusing it (413) as soon as it exceeds the byte limit."""
from __future__ import annotations

from starlette.requests import Request

from .errors import PAYLOAD_TOO_LARGE, ApiError

# The rest of an over-limit body is never read: closing the connection tells the client to stop.
_CLOSE = {"Connection": "close"}


def _too_large(max_bytes: int, detail: str) -> ApiError:
    return ApiError(413, PAYLOAD_TOO_LARGE,
                    f"request body exceeds the limit of {max_bytes} bytes ({detail})",
                    headers=_CLOSE, max_bytes=max_bytes)


async def read_body(request: Request, max_bytes: int) -> bytes:
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
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes, f"more than {max_bytes} bytes received")
        if chunk:
            chunks.append(chunk)
    return b"".join(chunks)
