"""Error codes, the batch-level error exception and its JSON rendering (never a traceback)."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

# Batch-level codes (body `{"error": code, "message": ...}`).
MALFORMED_JSON = "malformed_json"
INVALID_BODY = "invalid_body"
BATCH_EMPTY = "batch_empty"
BATCH_TOO_LARGE = "batch_too_large"
DUPLICATE_ID = "duplicate_id"
PAYLOAD_TOO_LARGE = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
MALFORMED_REQUEST = "malformed_request"  # not valid HTTP/1.1: answered by the protocol (_http.py)
HEADERS_TOO_LARGE = "headers_too_large"  # a request head over settings.MAX_HEAD_BYTES (431, _http.py)
INTERNAL_ERROR = "internal_error"
ATOMIC_BATCH_FAILED = "atomic_batch_failed"

# Per-item codes (result `error.code`); validation codes are `invalid_<field>`, `missing_field`, `unknown_field`.
MISSING_FIELD = "missing_field"
UNKNOWN_FIELD = "unknown_field"
ALREADY_EXISTS = "already_exists"
PARENT_NOT_FOUND = "parent_not_found"
DEPENDENCY_FAILED = "dependency_failed"
UNKNOWN_DEPENDENCY = "unknown_dependency"
DEPENDENCY_CYCLE = "dependency_cycle"
NOT_APPLIED = "not_applied"

JSON_TYPE = "application/json"


class JSONResponse(Response):
    """A JSON response rendered with orjson."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """A request-level error: answered as ``{"error": code, "message": ..., **extra}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def item_error(code: str, message: str, field: str | None = None, *, retryable: bool = False,
               **extra: Any) -> dict[str, Any]:
    """The ``error`` object of one failed item."""
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    err["retryable"] = retryable
    err.update(extra)
    return err


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        code, message = NOT_FOUND, f"no route for {request.url.path}"
    elif exc.status_code == 405:
        code, message = METHOD_NOT_ALLOWED, f"method {request.method} is not allowed on {request.url.path}"
    else:
        code, message = f"http_{exc.status_code}", str(exc.detail)
    return JSONResponse({"error": code, "message": message}, status_code=exc.status_code,
                        headers=dict(exc.headers) if exc.headers else None)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": INTERNAL_ERROR, "message": "internal server error"}, status_code=500)
