"""Reading and writing every wire shape through the profile's envelope mapping.

Checks never name `operations`, `results` or a canonical error code themselves: they ask this
module, so the same rules run against targets whose envelope uses other names (SPEC §2): SQS's
`Entries` answered by `Successful`/`Failed`, CouchDB's `docs` answered by a bare array, or a bare
array answered by per-item HTTP statuses correlated by position.
"""
from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import orjson

_ABSENT = object()

# Every canonical default of the kit, in one table (SPEC §2): the profile's `envelope` and
# `async.job` sections override any of these keys, schemas/profile.schema.json states the same
# values as `default`s (tests/test_profile.py keeps the two equal), and no check names a field itself.
CANONICAL: dict[str, Any] = {
    "request_items": "/operations",
    "results": "/results",
    "correlation": "id",
    "result_id": "/id",
    "result_status": "/status",
    "ok_values": ["ok"],
    "error_values": ["error"],
    "data": "/data",
    "error": "/error",
    "error_code": "/error/code",
    "error_message": "/error/message",
    "error_retryable": "/error/retryable",
    "summary": {"total": "/summary/total", "succeeded": "/summary/succeeded", "failed": "/summary/failed"},
    "codes": {},
    "content_type": "application/json",
    "batch_status": "/status",
    "failed_values": ["failed"],
    "duplicate_ids": "reject",
    "results_mode": "all",
    "failures_form": "list",
}

CANONICAL_JOB: dict[str, Any] = {
    "job_id": "/job_id", "status_url": "/status_url", "status": "/status",
    "total": "/total", "succeeded": "/succeeded", "failed": "/failed", "pending": "/pending",
    "results": "/results", "next_cursor": "/next_cursor", "cursor_param": "cursor",
}

DEFAULTS: dict[str, dict[str, Any]] = {"envelope": CANONICAL, "async.job": CANONICAL_JOB}
"""The table: profile section -> its canonical defaults."""


def _tokens(pointer: str) -> list[str]:
    return [raw.replace("~1", "/").replace("~0", "~") for raw in pointer[1:].split("/")] if pointer else []


@functools.lru_cache(maxsize=4096)
def _compiled(pointer: str) -> tuple[str, ...]:
    """The tokens of `pointer` (a bare name is `/name`), parsed once: a profile has a few dozen
    pointers, read thousands of times per job status (ASYNC-05's 4,608-item polls spent more time
    splitting pointers than parsing JSON; issue 18)."""
    return tuple(_tokens(pointer if pointer.startswith("/") or not pointer else "/" + pointer))


def pointer_get(doc: Any, pointer: str, default: Any = _ABSENT) -> Any:
    """RFC 6901 JSON Pointer lookup; '' is the whole document."""
    found = _at(doc, _compiled(pointer), _ABSENT)
    if found is _ABSENT:
        if default is _ABSENT:
            raise KeyError(pointer)
        return default
    return found


def _at(doc: Any, tokens: tuple[str, ...], default: Any = None) -> Any:
    """The value at a pointer whose tokens are already worked out (`_compiled`), or `default`."""
    node = doc
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return default
    return node


def as_pointer(field: str) -> str:
    """A profile's item field as a JSON Pointer: a bare name means `/name` (the profile loader
    refuses every other form it cannot use, see `pointer_problem`)."""
    return field if field.startswith("/") or field == "" else "/" + field


# Items that carry no id (event and message APIs correlate by position): the kit still tells its
# items apart, by an id it keeps beside each item object and never sends.
_UNSENT_IDS: dict[int, tuple[Any, Any]] = {}
_unsent_lock = threading.Lock()


def bind_id(item: Any, value: Any) -> None:
    """Remember `value` as the kit's id of the item object `item` (which carries none)."""
    with _unsent_lock:
        _UNSENT_IDS[id(item)] = (item, value)


def bound_id(item: Any) -> Any:
    found = _UNSENT_IDS.get(id(item))
    return found[1] if found is not None and found[0] is item else None


def pointer_problem(value: str, *, empty_ok: bool) -> str | None:
    """Why `value` is neither a bare member name nor a JSON Pointer the kit can use (None: usable)."""
    if value == "":
        return None if empty_ok else "an empty pointer names the whole document, not a member"
    if value.startswith("#"):
        return f"a URI fragment: write the JSON Pointer without '#' ({value[1:] or '/'})"
    if not value.startswith("/"):
        if "/" in value:
            return f"a bare name cannot hold '/': a JSON Pointer starts with '/' (did you mean /{value}?)"
        if "." in value:
            return (f"a dotted path is not a pointer: write /{value.replace('.', '/')} for a nested member, "
                    f"or /{value} for a member whose name holds dots")
        return None
    for token in value[1:].split("/"):
        if token == "":
            return "an empty member name (a doubled or trailing '/')"
        if re.search(r"~(?![01])", token):
            return "'~' must be escaped as ~0 and '/' inside a name as ~1 (RFC 6901)"
    return None


def pointer_set(doc: dict[str, Any], pointer: str, value: Any) -> None:
    parts = _compiled(pointer if pointer.startswith("/") else "/" + pointer)
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def _as_key(value: Any) -> Any:
    """A result's id as a key results can be looked up by. An object or array where an id belongs
    (a target's defect) becomes its canonical JSON text: it matches no item the kit sent, so the
    checks judge it (CORE-02: no result for the item), instead of the kit failing to hash it."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


# Every byte but a digit read as a space: a run of 19 digits then shows as 19 zeros (bytes.translate
# and `in` are C loops, ~0.1 ms for a 150 KB page of job results).
_DIGITS_ONLY = bytes(ord("0") if chr(b).isdigit() and b < 128 else ord(" ") for b in range(256))
_LONG_NUMBER = b"0" * 19


def loads_json(content: bytes) -> Any:
    """`json.loads(content)`, the same values and the same errors, about twice as fast on the kit's
    answers: orjson parses first, and wherever it could answer otherwise than json (an error it
    raises: NaN, a byte order mark, UTF-16, a lone surrogate, nesting past 1,024 levels; or a number
    of 19 or more digits, which it reads as a float where json keeps the integer) the stdlib parses
    again and decides. Job readings and read-backs parse thousands of bodies a run (issue 18)."""
    if _LONG_NUMBER not in content.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return json.loads(content)


def json_of(resp: httpx.Response | Any) -> Any:
    """The response body as JSON, or None (no exception) when it is not JSON the kit can read:
    invalid, or nested deeper than Python's parser goes (a RecursionError, ~1,000 levels)."""
    if not isinstance(resp, httpx.Response):
        return resp
    try:
        return loads_json(resp.content) if resp.content else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def is_json_media_type(ctype: str) -> bool:
    """application/json, any +json suffix, and vendor JSON types such as AWS's
    application/x-amz-json-1.0 (a subtype with `json` as one of its tokens)."""
    ctype = ctype.split(";")[0].strip().lower()
    if "/" not in ctype:
        return False
    sub = ctype.split("/", 1)[1]
    return sub == "json" or sub.endswith("+json") or "json" in re.split(r"[-+.]", sub)


def is_json_content_type(resp: httpx.Response) -> bool:
    return is_json_media_type(resp.headers.get("content-type", ""))


@dataclass(slots=True)
class Result:
    """One item's outcome, in the spec's words, whatever the target's envelope looks like."""

    id: Any
    ok: bool | None  # None: the outcome could not be read
    status: Any
    data: Any = None
    error: Any = None
    error_code: str | int | float | None = None
    """As the target wrote it: a string, or a number (JSON-RPC's -32601); compared by value."""
    error_message: str | None = None
    raw: Any = None
    position: int = 0  # index in its result list (in the list it came from, for split lists)
    extra: dict[str, Any] = field(default_factory=dict)
    # Whether retrying the unchanged item can succeed, where the profile says how the target
    # tells (error_retryable, or error_sender_fault inverted); None: not declared or not said.
    retryable: bool | None = None
    http_status: int | None = None
    """The per-item HTTP status where the profile declares one (result_http_status)."""
    retry_after: Any = None
    """The per-item Retry-After where the profile declares one (result_retry_after)."""
    implied: bool = False
    """True for an item absent from a failure-only answer (results_mode: failures_only): it
    succeeded by the answer's silence, so there is no result entry (no data, no raw) to read."""


def is_code(value: Any) -> bool:
    """A machine-readable code: a string or a number (never a boolean, an object or null)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _flag(value: Any) -> bool | None:
    """A boolean flag as the target wrote it: JSON true/false, or the strings "true"/"false"
    (moto's SQS answers `"SenderFault": "true"` for some entries, the same fact as a string)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


class Envelope:
    """The profile's envelope mapping (defaults: the canonical shape), applied to requests and responses."""

    def __init__(self, mapping: dict[str, Any] | None = None, id_field: str = "id"):
        self.m = dict(CANONICAL)
        self.m.update(mapping or {})
        self.id_field = id_field
        self.id_pointer = as_pointer(id_field) if id_field is not None else None
        """None: items carry no id (correlation by position; the kit's ids are kept beside them)."""
        pattern = self.m.get("batch_error_pattern")
        self._pattern = re.compile(pattern) if pattern else None

    # -- what the mapping says ---------------------------------------------
    @property
    def split_results(self) -> bool:
        """Successes and failures come in separate lists (SQS: Successful / Failed)."""
        if self.failures_only:
            return False
        return bool(self.m.get("results_ok") is not None or self.m.get("results_error") is not None)

    @property
    def failures_only(self) -> bool:
        """The answer lists only the failed items (results_mode: failures_only, at results_error):
        an item absent from it succeeded (SQS-like `Failed` alone, DynamoDB's `UnprocessedItems`)."""
        return self.m.get("results_mode") == "failures_only"

    @property
    def failures_map(self) -> bool:
        """The failures are a map (failures_form: map) whose members each hold a list of failure
        entries (or one entry): DynamoDB's `UnprocessedItems: {"<table>": [...]}`."""
        return self.failures_only and self.m.get("failures_form") in ("map", "id_map")

    @property
    def failures_by_id(self) -> bool:
        """The failures are a map keyed by the item id (failures_form: id_map): {"<id>": entry}."""
        return self.failures_only and self.m.get("failures_form") == "id_map"

    @property
    def result_index(self) -> str | None:
        """Where a failure entry names the index of its item (failure-only, position correlation)."""
        return self.m.get("result_index")

    @property
    def by_position(self) -> bool:
        return self.m.get("correlation") == "position"

    @functools.cached_property
    def _tokens(self) -> dict[str, tuple[str, ...]]:
        """The tokens of every pointer of the mapping, worked out once: parse_result reads about eight
        per result, and a job reading has thousands of results (issue 18). The mapping is not changed
        after the envelope is made."""
        return {k: _compiled(v) for k, v in self.m.items() if isinstance(v, str)}

    @functools.cached_property
    def outcome(self) -> str:
        """How an item's outcome is read: `list`, `error_present`, `http_status` or `status`."""
        if self.split_results or self.failures_only:
            return "list"
        if self.m.get("error_present") is not None:
            return "error_present"
        if self.m.get("result_http_status") is not None:
            return "http_status"
        return "status"

    @property
    def canonical(self) -> bool:
        """The response is in the canonical shape, so the canonical schemas apply to it as it is."""
        keys = ("results", "result_id", "result_status", "ok_values", "error_values", "data", "error",
                "error_code", "error_message")
        return self.outcome == "status" and not self.by_position and all(self.m[k] == CANONICAL[k] for k in keys)

    @property
    def results_location(self) -> str:
        """Where the results are, for messages."""
        if self.failures_only:
            form = "a map keyed by item id" if self.failures_by_id else "a map of lists" if self.failures_map else "a list"
            return (f"failures only, {form} at "
                    f"{self.m.get('results_error')!r} (an absent item succeeded)")
        if self.split_results:
            return f"ok results at {self.m.get('results_ok')!r}, error results at {self.m.get('results_error')!r}"
        return f"a list at {self.m['results']!r}" if self.m["results"] else "a bare array"

    @property
    def request_items(self) -> str:
        """The JSON Pointer of the items in a batch request ('' for a bare array)."""
        return self.m["request_items"]

    @property
    def request_fields(self) -> dict[str, Any]:
        """The fixed members of every batch request body (a copy)."""
        return json.loads(json.dumps(self.m.get("request_fields") or {}))

    @property
    def status_values(self) -> list[Any]:
        """The values of result_status that mean ok or error (for messages)."""
        return list(self.m["ok_values"]) + list(self.m["error_values"])

    @property
    def duplicate_ids(self) -> str:
        """How the target answers duplicate ids in one batch (CORE-07): `reject` (a 4xx naming the id)
        or `per_item` (declared: an error result for each duplicate)."""
        return self.m["duplicate_ids"]

    @property
    def batch_status_pointer(self) -> str:
        return self.m["batch_status"]

    @property
    def failed_values(self) -> list[Any]:
        """Values of batch_status that say an atomic batch failed and nothing was applied."""
        return list(self.m["failed_values"])

    def batch_status(self, doc: Any) -> Any:
        """The batch-level status of a response (ATOM-03), or None."""
        return pointer_get(json_of(doc), self.m["batch_status"], None)

    @property
    def content_type(self) -> str:
        return self.m.get("content_type") or "application/json"

    def is_json(self, resp: httpx.Response) -> bool:
        """The response is labelled JSON (or the media type the profile declares for the target)."""
        ctype = resp.headers.get("content-type", "")
        declared = self.content_type.split(";")[0].strip().lower()
        return is_json_media_type(ctype) or ctype.split(";")[0].strip().lower() == declared

    # -- requests -----------------------------------------------------------
    def body(self, items: list[Any], extra: dict[str, Any] | None = None) -> Any:
        """The batch request: the items where the profile puts them, the profile's fixed
        `request_fields` (a queue URL), then `extra` members."""
        pointer = self.m["request_items"]
        if not pointer:
            return list(items)
        doc: dict[str, Any] = json.loads(json.dumps(self.m.get("request_fields") or {}))
        for k, v in (extra or {}).items():
            doc[k] = v
        pointer_set(doc, pointer, list(items))
        return doc

    def items_of(self, body: Any) -> list[Any] | None:
        """The item list of a request body built by `body()` (None when absent)."""
        found = pointer_get(body, self.m["request_items"], None)
        return found if isinstance(found, list) else None

    # -- codes --------------------------------------------------------------
    def code(self, name: str) -> str:
        """The target's name for one of the spec's error codes (the first, where it has several)."""
        names = self.codes(name)
        return names[0]

    def codes(self, name: str) -> list[Any]:
        """Every code the target uses for one of the spec's error codes (strings or numbers, as the
        profile gives them: compared by value)."""
        given = (self.m.get("codes") or {}).get(name, name)
        return [g for g in given if is_code(g)] or [name] if isinstance(given, list) else [given]

    # -- responses: per-item results ---------------------------------------
    def raw_results(self, doc: Any) -> list[Any] | None:
        """The raw result list (split lists joined, successes first); None when absent."""
        doc = json_of(doc)
        if self.failures_only:
            entries = self._failure_entries(doc)
            return None if entries is None else [raw for raw, _key in entries]
        if self.split_results:
            found = [(pointer_get(doc, self.m[k], None) if self.m.get(k) is not None else [])
                     for k in ("results_ok", "results_error")]
            # One list may be left out when empty (some APIs omit `Failed: []`); both absent is no result list.
            if all(f is None for f in found) or any(f is not None and not isinstance(f, list) for f in found):
                return None
            return [r for f in found for r in (f or [])]
        found = pointer_get(doc, self.m["results"], None)
        return found if isinstance(found, list) else None

    def _failure_entries(self, doc: Any) -> list[tuple[Any, Any]] | None:
        """(entry, map key) of every failure of a failure-only answer, in the answer's order; [] when
        the failure member is absent (no failure), None when the answer is not a JSON object or array
        or the member has another form than the profile says (a map of lists, or a list)."""
        if not isinstance(doc, (dict, list)):
            return None
        found = pointer_get(doc, self.m.get("results_error") or "", None)
        if found is None:
            return []
        if not self.failures_map:
            return [(raw, None) for raw in found] if isinstance(found, list) else None
        if not isinstance(found, dict):
            return None
        out: list[tuple[Any, Any]] = []
        for key, value in found.items():
            if isinstance(value, list):
                out.extend((raw, key) for raw in value)
            elif isinstance(value, dict):
                out.append((value, key))
            else:
                return None
        return out

    def answered(self, resp: httpx.Response | Any) -> bool:
        """Whether a failure-only answer says something about every item sent: a 2xx (where the status
        is known) whose body has its failures in the declared form and carries no batch-level error
        code (at the profile's batch_error_code, or the canonical `error` member). Only then does an
        item's absence mean success; a refusal's error body lists no failure and means nothing applied."""
        if isinstance(resp, httpx.Response) and not 200 <= resp.status_code < 300:
            return False
        doc = json_of(resp)
        if self._failure_entries(doc) is None:
            return False
        if self.batch_status(doc) in self.failed_values:
            return False  # a failed (atomic) batch: nothing was applied, whatever it leaves out
        if isinstance(doc, dict):
            for pointer in self._declared("batch_error_code"):
                if is_code(pointer_get(doc, pointer, None)) and pointer_get(doc, pointer, None) != "":
                    return False
            err = doc.get("error") if "batch_error_code" not in self.m else None
            if isinstance(err, str) or isinstance(err, dict) and is_code(err.get("code")):
                return False
        return True

    def _read(self, raw: dict[str, Any], key: str, ok: bool | None) -> Any:
        tokens = self._tokens.get(key)
        if tokens is None:
            return None
        # An empty pointer names the whole result; for an ok result that is not an error.
        if not tokens and ok is True and key.startswith("error"):
            return None
        return _at(raw, tokens)

    def _outcome(self, raw: dict[str, Any], in_list: str | None) -> tuple[bool | None, Any]:
        mode = self.outcome
        if mode == "list":
            status = in_list
            return in_list == "ok", status
        if mode == "error_present":
            value = _at(raw, self._tokens["error_present"])
            present = value is not None and value is not False and value != ""
            return (not present), ("error" if present else "ok")
        if mode == "http_status":
            value = _at(raw, self._tokens["result_http_status"])
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
                return None, value
            return 200 <= value < 300, value
        value = _at(raw, self._tokens["result_status"])
        if value in self.m["ok_values"]:
            return True, value
        if value in self.m["error_values"]:
            return False, value
        return None, value

    def parse_result(self, raw: Any, position: int, in_list: str | None = None) -> Result:
        if not isinstance(raw, dict):
            return Result(id=None, ok=None, status=None, raw=raw, position=position)
        ok, status = self._outcome(raw, in_list)
        code = self._read(raw, "error_code", ok)
        message = self._read(raw, "error_message", ok)
        retryable: bool | None = None
        if ok is False:
            flag = _flag(self._read(raw, "error_retryable", ok))
            fault = _flag(self._read(raw, "error_sender_fault", ok))
            if flag is not None:
                retryable = flag
            elif fault is not None:
                retryable = not fault
        tokens = self._tokens
        http_status = _at(raw, tokens["result_http_status"]) if self.m.get("result_http_status") else None
        if isinstance(http_status, str) and http_status.strip().isdigit():
            http_status = int(http_status.strip())
        return Result(
            http_status=http_status if isinstance(http_status, int) and not isinstance(http_status, bool) else None,
            retry_after=_at(raw, tokens["result_retry_after"]) if self.m.get("result_retry_after") else None,
            id=_as_key(_at(raw, tokens["result_id"])) if self.m.get("result_id") is not None else None,
            ok=ok,
            status=status,
            data=self._read(raw, "data", ok),
            error=self._read(raw, "error", ok),
            error_code=code if is_code(code) else None,
            error_message=message if isinstance(message, str) else None,
            raw=raw,
            position=position,
            retryable=retryable,
        )

    def results(self, resp: httpx.Response | Any) -> list[Result]:
        """Every result of a batch response, in the order the target gave them (split lists:
        the ok list, then the error list)."""
        doc = json_of(resp)
        if self.failures_only:
            out_f: list[Result] = []
            for i, (raw, key) in enumerate(self._failure_entries(doc) or []):
                r = self.parse_result(raw, i, "error")
                if key is not None:
                    r.extra["map_key"] = key
                if self.failures_by_id:
                    r.id = key  # the map key is the item's id (JSON object keys are strings)
                if self.by_position:
                    index = pointer_get(raw, self.m["result_index"], None) if isinstance(raw, dict) else None
                    if isinstance(index, str) and index.strip().isdigit():
                        index = int(index.strip())
                    r.extra["index"] = index if isinstance(index, int) and not isinstance(index, bool) else None
                out_f.append(r)
            return out_f
        if self.split_results:
            out: list[Result] = []
            for key, kind in (("results_ok", "ok"), ("results_error", "error")):
                found = pointer_get(doc, self.m[key], None) if self.m.get(key) is not None else None
                if isinstance(found, list):
                    out.extend(self.parse_result(r, i, kind) for i, r in enumerate(found))
            return out
        raws = self.raw_results(doc)
        if raws is None:
            return []
        return [self.parse_result(r, i) for i, r in enumerate(raws)]

    def result_map(self, resp: httpx.Response | Any, items: list[dict[str, Any]] | None = None) -> dict[Any, Result]:
        """Results keyed by item id (by position where the target correlates by position: the
        result at index i belongs to items[i], and gets that item's id when it carries none)."""
        res = self.results(resp)
        if self.failures_only:
            return self._failure_map(resp, res, items)
        if self.by_position and items is not None:
            out_pos: dict[Any, Result] = {}
            for i, r in enumerate(res[: len(items)]):
                item_id = self.item_id(items[i])
                if r.id is None:
                    r.id = item_id
                out_pos[item_id] = r
            return out_pos
        out: dict[Any, Result] = {}
        for r in res:
            out.setdefault(r.id, r)
        return out

    def entry_id(self, r: Result, items: list[Any] | None) -> Any:
        """The id of the item a failure entry answers: the id it carries (correlation: id), or the id
        of the item at the index it names (correlation: position, result_index); None when it names
        no item of `items` (an invented failure)."""
        if not self.by_position:
            return r.id
        index = r.extra.get("index")
        if items is None or index is None or not 0 <= index < len(items):
            return None
        return self.item_id(items[index])

    def _failure_map(self, resp: Any, res: list[Result], items: list[Any] | None) -> dict[Any, Result]:
        out: dict[Any, Result] = {}
        for r in res:
            item_id = self.entry_id(r, items)
            if self.by_position and item_id is not None and r.id is None:
                r.id = item_id
            if item_id is not None or not self.by_position:
                out.setdefault(item_id, r)
        if items is not None and self.answered(resp):
            for i, item in enumerate(items):
                item_id = self.item_id(item)
                if item_id not in out:
                    out[item_id] = Result(id=item_id, ok=True, status="absent from the failures", position=i,
                                          implied=True)
        return out

    def item_id(self, item: Any) -> Any:
        """The id of an item the kit built (at the id pointer, or kept beside an item without one)."""
        if self.id_pointer is None:
            return bound_id(item)
        return pointer_get(item, self.id_pointer, None) if isinstance(item, dict) else None

    def summary(self, resp: httpx.Response | Any) -> dict[str, Any]:
        """The summary fields (total, succeeded, failed, errors_flag) the response carries where the
        profile (or the canonical `summary` object) puts them; never guessed from other names."""
        doc = json_of(resp)
        out = {}
        missing = object()
        for name, pointer in (self.m.get("summary") or {}).items():
            value = pointer_get(doc, pointer, missing)
            if value is not missing:
                out[name] = value
        return out

    # -- responses: batch-level errors -------------------------------------
    def _declared(self, key: str) -> list[str]:
        given = self.m.get(key)
        if given is None:
            return []
        return [given] if isinstance(given, str) else list(given)

    def _extract(self, value: str) -> list[str]:
        out = [value]
        if self._pattern is not None:
            m = self._pattern.search(value)
            if m:
                out.insert(0, m.group(1) if m.groups() and m.group(1) else m.group(0))
        return out

    def error_codes(self, resp: httpx.Response | Any) -> list[str]:
        """Every batch-level error code the body carries: the profile's `batch_error_code`
        pointers first (through `batch_error_pattern`), then the canonical forms: `error`
        (a string), `error.code`, problem+json `code`, and `type` (whole or its last segment)."""
        doc = json_of(resp)
        out: list[str] = []
        for pointer in self._declared("batch_error_code"):
            value = pointer_get(doc, pointer, None)
            if isinstance(value, str) and value:
                out.extend(self._extract(value))
            elif is_code(value):
                out.append(value)
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, str):
                out.append(err)
            elif isinstance(err, dict) and is_code(err.get("code")) and err.get("code") != "":
                out.append(err["code"])
            if is_code(doc.get("code")) and doc.get("code") != "":
                out.append(doc["code"])
            typ = doc.get("type")
            if isinstance(typ, str) and typ:
                out.append(typ)
                tail = typ.rstrip("/").replace(":", "/").rsplit("/", 1)[-1].split("#")[-1]
                out.append(tail)
        return list(dict.fromkeys(out))

    def error_code(self, resp: httpx.Response | Any) -> str | None:
        codes = self.error_codes(resp)
        return codes[0] if codes else None

    def has_error_code(self, resp: httpx.Response | Any, name: str) -> bool:
        """The batch-level error carries the target's name (any of its names) for spec code `name`."""
        found = set(self.error_codes(resp))
        return any(c in found for c in self.codes(name))

    def error_message(self, resp: httpx.Response | Any) -> str:
        """The human text of a batch-level error: the profile's `batch_error_message` pointers,
        then message, detail, title, error.message."""
        doc = json_of(resp)
        parts: list[str] = []
        for pointer in self._declared("batch_error_message"):
            value = pointer_get(doc, pointer, None)
            if isinstance(value, str):
                parts.append(value)
        if isinstance(doc, dict):
            for key in ("message", "detail", "title"):
                if isinstance(doc.get(key), str):
                    parts.append(doc[key])
            err = doc.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                parts.append(err["message"])
        return " ".join(dict.fromkeys(parts))

    def error_shape(self, resp: httpx.Response | Any) -> str | None:
        """The shape of a batch-level error BODY as one client handler sees it, or None when it
        carries no code and message where the profile or the canonical shapes say (HTTP-05).

        The body decides, not its label: HTTP-05 is about one body shape, so a problem+json body
        labelled `application/json` is the same shape as one labelled `application/problem+json`
        (`media_label` gives the label for a check that wants to note a difference). The label only
        names an object whose members RFC 9457 leaves optional (no `type`, `title` or `detail`)."""
        doc = json_of(resp)
        if not isinstance(doc, dict):
            return None
        code_at = [p for p in self._declared("batch_error_code") if is_code(pointer_get(doc, p, None))]
        msg_at = [p for p in self._declared("batch_error_message") if isinstance(pointer_get(doc, p, None), str)]
        if code_at and (msg_at or not self._declared("batch_error_message") and isinstance(doc.get("message"), str)):
            return f"declared: code at {code_at[0]}, message at {msg_at[0] if msg_at else '/message'}"
        err = doc.get("error")
        if isinstance(err, str) and isinstance(doc.get("message"), str):
            return "{error: code, message}"
        if isinstance(err, dict) and is_code(err.get("code")) and isinstance(err.get("message"), str):
            return "{error: {code, message}}"
        if isinstance(doc.get("type"), str) and isinstance(doc.get("title") or doc.get("detail"), str):
            return "problem+json"
        if self.media_label(resp) == "application/problem+json":
            return "problem+json"
        return None

    @staticmethod
    def media_label(resp: httpx.Response | Any) -> str:
        """The media type a response is labelled with (lower case, no parameters; "" if none)."""
        if not isinstance(resp, httpx.Response):
            return ""
        return resp.headers.get("content-type", "").split(";")[0].strip().lower()
        code_at = [p for p in self._declared("batch_error_code") if is_code(pointer_get(doc, p, None))]
        msg_at = [p for p in self._declared("batch_error_message") if isinstance(pointer_get(doc, p, None), str)]
        if code_at and (msg_at or not self._declared("batch_error_message") and isinstance(doc.get("message"), str)):
            return f"declared: code at {code_at[0]}, message at {msg_at[0] if msg_at else '/message'}"
        err = doc.get("error")
        if isinstance(err, str) and isinstance(doc.get("message"), str):
            return "{error: code, message}"
        if isinstance(err, dict) and is_code(err.get("code")) and isinstance(err.get("message"), str):
            return "{error: {code, message}}"
        if isinstance(doc.get("type"), str) and isinstance(doc.get("title") or doc.get("detail"), str):
            return "problem+json (labelled application/json)"
        return None
