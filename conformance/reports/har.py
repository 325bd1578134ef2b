"""exchanges.har: every exchange of the run as HAR 1.2, which browsers' dev tools and proxies open.

The exchanges are the ones the checks recorded as evidence (and the preflight's), already redacted
when recorded; `write_all` scrubs the profile's secrets once more. Each entry's `comment` names the
rule and the check that sent it, and the kit's note (why it sent it). Bodies are the evidence's:
cut at 4000 bytes with a note of the full size. HAR spec: http://www.softwareishard.com/blog/har-12-spec/
"""
from __future__ import annotations

import datetime as _dt
import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .._model import Exchange, RunReport

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
            415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _headers(h: dict[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in (h or {}).items()]


def _ctype(h: dict[str, Any] | None) -> str:
    return next((str(v) for k, v in (h or {}).items() if str(k).lower() == "content-type"), "")


def _entry(ex: Exchange, comment: str) -> dict[str, Any]:
    ms = float(ex.elapsed_ms or 0.0)
    started = _dt.datetime.fromtimestamp(ex.recorded_at - ms / 1000, _dt.timezone.utc)
    req: dict[str, Any] = {
        "method": ex.method, "url": ex.url, "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": _headers(ex.request_headers),
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(ex.url).query, keep_blank_values=True)],
        "headersSize": -1, "bodySize": len((ex.request_body or "").encode("utf-8", "backslashreplace")),
    }
    if ex.request_body is not None:
        req["postData"] = {"mimeType": _ctype(ex.request_headers) or "application/octet-stream",
                           "text": ex.request_body}
    body = ex.response_body or ""
    resp = {
        "status": ex.status or 0,
        "statusText": _REASONS.get(ex.status or 0, "") if ex.status is not None else (ex.error or "no response"),
        "httpVersion": "HTTP/1.1", "cookies": [], "headers": _headers(ex.response_headers),
        "content": {"size": len(body.encode("utf-8", "backslashreplace")), "mimeType": _ctype(ex.response_headers),
                    "text": body},
        "redirectURL": "", "headersSize": -1, "bodySize": -1,
    }
    if ex.error:
        resp["_error"] = ex.error
    return {
        "startedDateTime": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "time": round(ms, 3),
        "request": req,
        "response": resp,
        "cache": {},
        "timings": {"send": 0, "wait": round(ms, 3), "receive": 0},
        "comment": comment + (f" · {ex.note}" if ex.note else ""),
        "_curl": ex.curl,
    }


def _from_dict(d: dict[str, Any]) -> Exchange:
    """The preflight keeps its evidence as report.json dicts."""
    req, resp = d.get("request") or {}, d.get("response") or {}
    return Exchange(method=req.get("method", ""), url=req.get("url", ""), request_headers=req.get("headers") or {},
                    request_body=req.get("body"), status=resp.get("status") if d.get("response") else None,
                    response_headers=resp.get("headers") or {}, response_body=resp.get("body"),
                    elapsed_ms=d.get("elapsed_ms"), error=d.get("error"), curl=d.get("curl") or "", note=d.get("note"))


def har_dict(report: RunReport) -> dict[str, Any]:
    entries = []
    try:
        t0 = _dt.datetime.fromisoformat(report.started_at).timestamp()
    except (TypeError, ValueError):
        t0 = None
    for d in (report.preflight or {}).get("evidence") or []:
        ex = d if isinstance(d, Exchange) else _from_dict(d)
        if t0 is not None and not isinstance(d, Exchange):
            # Kept as a dict without its time: the preflight is the run's first exchange.
            t0 += (ex.elapsed_ms or 0) / 1000
            ex.recorded_at = t0
        entries.append(_entry(ex, "preflight"))
    for r in report.rules:
        for c in r.checks:
            for ex in c.evidence:
                entries.append(_entry(ex, f"{r.id} {c.name} ({c.verdict.value})"))
    entries.sort(key=lambda e: e["startedDateTime"])
    return {"log": {
        "version": "1.2",
        "creator": {"name": "batchspec", "version": report.tool_version},
        "pages": [],
        "entries": entries,
        "comment": f"batchspec run against {report.target} started {report.started_at}; "
                   "secrets redacted; bodies cut at 4000 bytes as in the report's evidence",
    }}


def render_har(report: RunReport) -> str:
    # The largest report (every exchange, bodies up to 4000 bytes each: ~3 MB for the embedded run):
    # orjson writes it in a tenth of json's time. Every value har_dict builds is a str, an int, a
    # finite float, None, a list or a dict, which both write alike (orjson without spaces). What
    # orjson refuses (a lone surrogate from ROB-02's hostile evidence, which json writes and
    # write_all escapes) goes to json as before.
    har = har_dict(report)
    try:
        return orjson.dumps(har).decode() + "\n"
    except orjson.JSONEncodeError:
        return json.dumps(har, ensure_ascii=False, default=str) + "\n"
