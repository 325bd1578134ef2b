"""Reading and writing every wire shape through the profile's envelope mapping.

Checks never name `operations`, `results` or a canonical error code themselves: they ask this
module, so the same rules run against targets whose envelope uses other names (SPEC §2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

_ABSENT = object()


def pointer_get(doc: Any, pointer: str, default: Any = _ABSENT) -> Any:
    """RFC 6901 JSON Pointer lookup; '' is the whole document."""
    if pointer == "":
        return doc
    node = doc
    for raw in pointer.lstrip("/").split("/") if pointer else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            if default is _ABSENT:
                raise KeyError(pointer)
            return default
    return node


def pointer_set(doc: dict[str, Any], pointer: str, value: Any) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def json_of(resp: httpx.Response) -> Any:
    """The response body as JSON, or _ABSENT-like None with no exception when it is not JSON."""
    try:
        return json.loads(resp.content) if resp.content else None
    except (ValueError, UnicodeDecodeError):
        return None


def is_json_content_type(resp: httpx.Response) -> bool:
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


@dataclass
class Result:
    """One item's outcome, in the spec's words, whatever the target's envelope looks like."""

    id: Any
    ok: bool | None  # None: the status could not be read
    status: Any
    data: Any = None
    error: Any = None
    error_code: str | None = None
    error_message: str | None = None
    raw: Any = None
    position: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Envelope:
    def __init__(self, mapping: dict[str, Any], id_field: str = "id"):
        self.m = mapping
        self.id_field = id_field

    # -- requests -----------------------------------------------------------
    def body(self, items: list[Any], extra: dict[str, Any] | None = None) -> Any:
        pointer = self.m["request_items"]
        if not pointer:
            return list(items)
        doc: dict[str, Any] = {}
        for k, v in (extra or {}).items():
            doc[k] = v
        pointer_set(doc, pointer, list(items))
        return doc

    @property
    def content_type(self) -> str:
        return self.m.get("content_type", "application/json")

    # -- responses ----------------------------------------------------------
    def code(self, name: str) -> str:
        """The target's name for one of the spec's error codes."""
        return (self.m.get("codes") or {}).get(name, name)

    def raw_results(self, doc: Any) -> list[Any] | None:
        found = pointer_get(doc, self.m["results"], None)
        return found if isinstance(found, list) else None

    def parse_result(self, raw: Any, position: int) -> Result:
        if not isinstance(raw, dict):
            return Result(id=None, ok=None, status=None, raw=raw, position=position)
        rid = pointer_get(raw, self.m["result_id"], None)
        status = pointer_get(raw, self.m["result_status"], None)
        ok: bool | None
        if status in self.m["ok_values"]:
            ok = True
        elif status in self.m["error_values"]:
            ok = False
        else:
            ok = None
        error = pointer_get(raw, self.m["error"], None)
        code = pointer_get(raw, self.m["error_code"], None)
        message = pointer_get(raw, self.m["error_message"], None)
        return Result(
            id=rid,
            ok=ok,
            status=status,
            data=pointer_get(raw, self.m["data"], None),
            error=error,
            error_code=code if isinstance(code, str) else None,
            error_message=message if isinstance(message, str) else None,
            raw=raw,
            position=position,
        )

    def results(self, resp: httpx.Response | Any) -> list[Result]:
        doc = json_of(resp) if isinstance(resp, httpx.Response) else resp
        raws = self.raw_results(doc)
        if raws is None:
            return []
        return [self.parse_result(r, i) for i, r in enumerate(raws)]

    def result_map(self, resp: httpx.Response | Any, items: list[dict[str, Any]] | None = None) -> dict[Any, Result]:
        """Results keyed by item id (by position where the target correlates by position)."""
        res = self.results(resp)
        if self.m.get("correlation") == "position" and items is not None:
            return {items[i][self.id_field]: r for i, r in enumerate(res) if i < len(items)}
        out: dict[Any, Result] = {}
        for r in res:
            out.setdefault(r.id, r)
        return out

    def summary(self, resp: httpx.Response | Any) -> dict[str, Any]:
        doc = json_of(resp) if isinstance(resp, httpx.Response) else resp
        out = {}
        for name, pointer in (self.m.get("summary") or {}).items():
            value = pointer_get(doc, pointer, _ABSENT)
            if value is not _ABSENT:
                out[name] = value
        return out

    @staticmethod
    def error_codes(resp: httpx.Response | Any) -> list[str]:
        """Every batch-level error code the body carries: `error` (string), `error.code`,
        problem+json `code`, and `type` (whole or its last path segment)."""
        doc = json_of(resp) if isinstance(resp, httpx.Response) else resp
        if not isinstance(doc, dict):
            return []
        out: list[str] = []
        err = doc.get("error")
        if isinstance(err, str):
            out.append(err)
        elif isinstance(err, dict) and isinstance(err.get("code"), str):
            out.append(err["code"])
        if isinstance(doc.get("code"), str):
            out.append(doc["code"])
        typ = doc.get("type")
        if isinstance(typ, str) and typ:
            out.append(typ)
            tail = typ.rstrip("/").replace(":", "/").rsplit("/", 1)[-1].split("#")[-1]
            out.append(tail)
        return out

    def error_code(self, resp: httpx.Response | Any) -> str | None:
        codes = self.error_codes(resp)
        return codes[0] if codes else None

    def has_error_code(self, resp: httpx.Response | Any, name: str) -> bool:
        return self.code(name) in self.error_codes(resp)

    @staticmethod
    def error_message(resp: httpx.Response | Any) -> str:
        """The human text of a batch-level error (message, detail, title, error.message)."""
        doc = json_of(resp) if isinstance(resp, httpx.Response) else resp
        if not isinstance(doc, dict):
            return ""
        parts = []
        for key in ("message", "detail", "title"):
            if isinstance(doc.get(key), str):
                parts.append(doc[key])
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            parts.append(err["message"])
        return " ".join(parts)
