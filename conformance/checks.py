"""What the suites import: the vocabulary of a check (the only module a suite imports from the kit).

The target (`Target`: HTTP calls, `Target.raw` for what httpx cannot send), the envelope
(`Envelope`, `Result`), items (`ItemFactory`, `mixed_batch`), verdict helpers (`expect`,
`setup_failed`, `observed`), and the kit's readers: `openapi` (the target's OpenAPI document),
`hostile` (the ROB-02 corpus), `fuzz` (schemathesis), `schema_errors`, async jobs (`Jobs`).
"""
from __future__ import annotations

import copy
import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import _fuzz as fuzz
from . import _hostile as hostile
from . import _openapi as openapi
from ._callback import CallbackReceiver, loopback_host
from ._client import SetupError, Target, retry_after_seconds
from ._envelope import _tokens, as_pointer, bind_id, bound_id
from ._envelope import Envelope, Result, is_code, is_json_content_type, json_of, pointer_get, pointer_set
from ._jobs import COUNTS, STATUSES, TERMINAL, Jobs, Snapshot, by_id, fingerprint
from ._profile import Profile
from ._rawhttp import RawOutcome
from ._schemas import errors as schema_errors

__all__ = [
    "RuleViolation",
    "SetupError",
    "expect",
    "setup_failed",
    "key_header",
    "new_key",
    "effects",
    "outcomes",
    "setup_ok",
    "ItemFactory",
    "InvalidItem",
    "Result",
    "Envelope",
    "Target",
    "json_of",
    "is_json_content_type",
    "pointer_get",
    "short",
    "Mixed",
    "mixed_batch",
    "item_with_existing_id",
    "response_json",
    "is_2xx",
    "canonical_results",
    "observed",
    "series",
    "series_of",
    "observed_notes",
    "RawOutcome",
    "retry_after_seconds",
    "pointer_set",
    "is_code",
    "without_fields",
    "as_stored",
    "schema_errors",
    "openapi",
    "hostile",
    "fuzz",
    "Jobs",
    "Snapshot",
    "COUNTS",
    "STATUSES",
    "TERMINAL",
    "by_id",
    "fingerprint",
    "CallbackReceiver",
    "loopback_host",
]


# -- what a check did not observe ---------------------------------------------------------------
# Keyed by the running check's node id, so a note reaches the right outcome without a check passing
# anything around. The plugin names the check each thread runs (`_CURRENT`): checks marked
# `concurrent` run at the same time in several threads, where pytest's PYTEST_CURRENT_TEST (one
# environment variable for the whole process) names whichever started last.
_OBSERVED: dict[str, list[str]] = {}
_observed_lock = threading.Lock()
_CURRENT = threading.local()


def _current_check() -> str:
    nodeid = getattr(_CURRENT, "nodeid", None)
    return nodeid or os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def observed(note: str) -> None:
    """Say what this check did not observe (or observed only in part): a PASS with such a note is a
    PASS on what was observed, and the reports show the note beside it (GUIDE: a PASS that observed
    nothing is a lie). Call it from the check's own thread."""
    with _observed_lock:
        notes = _OBSERVED.setdefault(_current_check(), [])
        if note not in notes:
            notes.append(note)


def observed_notes(nodeid: str) -> list[str]:
    """The notes `observed` recorded for the check `nodeid` (taken: a second call returns [])."""
    with _observed_lock:
        return _OBSERVED.pop(nodeid, [])


class RuleViolation(AssertionError):
    """The target breaks the rule the check is marked with."""

    def __init__(self, message: str, expected: Any = None, seen: Any = None):
        super().__init__(message)
        self.message = message
        self.expected = None if expected is None else short(expected)
        self.seen = None if seen is None else short(seen)


def short(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def expect(condition: Any, message: str, *, expected: Any = None, seen: Any = None) -> None:
    """The rule holds only if `condition` is true; otherwise the check's rule is violated."""
    if not condition:
        raise RuleViolation(message, expected, seen)


# Measured series for report.html's charts, keyed like `observed` by the running check.
_SERIES: dict[str, list[dict[str, Any]]] = {}


def series(name: str, points: list[tuple[Any, float]] | list[list[Any]], *, x: str, y: str,
           unit: str = "", kind: str = "line") -> None:
    """Attach a measured series to this check's outcome; report.html draws it as an inline SVG chart
    made by the kit. `points` are (x, y) pairs; `kind` is "line" (over time) or "bar" (x is a label)."""
    pts = [[p[0] if isinstance(p[0], str) else round(float(p[0]), 4), round(float(p[1]), 4)] for p in points]
    with _observed_lock:
        _SERIES.setdefault(_current_check(), []).append(
            {"name": name, "x": x, "y": y, "unit": unit, "kind": kind, "points": pts})


def series_of(nodeid: str) -> list[dict[str, Any]]:
    """The series `series` recorded for the check `nodeid` (taken: a second call returns [])."""
    with _observed_lock:
        return _SERIES.pop(nodeid, [])


def key_header(profile: Profile) -> str:
    """The batch-level idempotency key header the profile declares; the calling check SKIPs
    without one (IDEM, ASYNC-08 and FLEET send keys the same way)."""
    name = profile.get("idempotency.header")
    if not name:
        import pytest

        pytest.skip("profile declares no idempotency.header (batch-level key)")
    return str(name)


def new_key(items: ItemFactory, what: str = "key") -> str:
    """A fresh idempotency key (or other unique value: `what` names it), run-prefixed like item ids so
    it never collides with another run's."""
    return f"{items.prefix}{what}-{uuid.uuid4().hex}"


def setup_failed(message: str) -> NoReturn:
    raise SetupError(message)


def setup_ok(resp: Any, what: str) -> Any:
    """A setup step through declared core operations must succeed, or the check is an ERROR."""
    if not 200 <= resp.status_code < 300:
        raise SetupError(f"{what}: the target answered {resp.status_code}, so the check could not be set up")
    return resp


@dataclass
class InvalidItem:
    item: dict[str, Any]
    code: str
    field: str | None


_run_counter = itertools.count()


def new_run_id() -> str:
    return time.strftime("%y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]


class ItemFactory:
    """Fresh unique item ids carrying the run prefix, so runs never collide and can be purged."""

    def __init__(self, profile: Profile, run_id: str, check_name: str = ""):
        self.profile = profile
        field = profile.id_field
        self.id_pointer = as_pointer(field) if field is not None else None
        """Where the id sits in an item (a JSON Pointer; a bare name in the profile means /name);
        None: items carry no id (`items.id_field: null`, correlation by position)."""
        self.id_field = _tokens(self.id_pointer)[0] if self.id_pointer else None
        """The item's top-level member that holds the id (the id itself, unless it is nested)."""
        prefix = profile.get("items.id_prefix") or f"bs-{run_id}-"
        self.prefix = prefix
        self._lock = threading.Lock()
        self._n = itertools.count(1)
        self._check = next(_run_counter)
        self.created: list[str] = []

    def new_id(self) -> str:
        with self._lock:
            n = next(self._n)
        new = f"{self.prefix}{self._check}-{n}-{os.urandom(2).hex()}"
        self.created.append(new)
        return new

    @property
    def has_ids(self) -> bool:
        """Whether items carry an id (False: `items.id_field: null`, correlated by position)."""
        return self.id_pointer is not None

    def id_of(self, item: Any) -> Any:
        """The id of `item` (None when it has none): where the profile puts it, or, for items that
        carry no id, the one the kit keeps beside the item object."""
        if self.id_pointer is None:
            return bound_id(item)
        return pointer_get(item, self.id_pointer, None) if isinstance(item, dict) else None

    def set_id(self, item: dict[str, Any], item_id: Any) -> dict[str, Any]:
        """Put `item_id` where the profile says ids go (creating nested members); returns `item`."""
        if self.id_pointer is None:
            bind_id(item, item_id)
        else:
            pointer_set(item, self.id_pointer, item_id)
        return item

    def with_id(self, template: dict[str, Any], item_id: str | None = None) -> dict[str, Any]:
        """A copy of `template` with a fresh id (or `item_id`) at the id pointer."""
        item = _json_copy(template)
        return self.set_id(item, item_id or self.new_id())

    def templates(self) -> list[dict[str, Any]]:
        return list(self.profile.get("items.valid") or [])

    def valid(self, n: int = 1) -> list[dict[str, Any]]:
        tpls = self.templates()
        return [self.with_id(tpls[i % len(tpls)]) for i in range(n)]

    def one(self) -> dict[str, Any]:
        return self.valid(1)[0]

    def invalid(self, n: int = 1) -> list[InvalidItem]:
        defs = self.profile.get("items.invalid") or []
        if not defs:
            import pytest

            pytest.skip("profile declares no items.invalid examples")
        out = []
        for i in range(n):
            d = defs[i % len(defs)]
            out.append(InvalidItem(self.with_id(d["item"]), d["code"], d.get("field")))
        return out


@dataclass
class Mixed:
    """A batch of valid and invalid items, interleaved, and what the kit expects of each."""

    items: list[dict[str, Any]]
    valid_ids: list[str]
    invalid: dict[str, InvalidItem]

    all_ids: list[Any] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """The id of every item, in batch order."""
        return list(self.all_ids)


def mixed_batch(items: ItemFactory, n_valid: int = 3, n_invalid: int = 2) -> Mixed:
    valid = items.valid(n_valid)
    bad = items.invalid(n_invalid)
    out: list[dict[str, Any]] = []
    # valid, invalid, valid, ...: no outcome may depend on being first or last
    for k in range(max(n_valid, n_invalid)):
        if k < n_valid:
            out.append(valid[k])
        if k < n_invalid:
            out.append(bad[k].item)
    return Mixed(out, [items.id_of(v) for v in valid], {items.id_of(b.item): b for b in bad},
                 [items.id_of(it) for it in out])


def item_with_existing_id(target: Target, items: ItemFactory, endpoint: str = "batch",
                          what: str = "setup: create the item a later batch will collide with") -> dict[str, Any]:
    """A valid item whose id is already taken: it passes validation and fails only when written (a
    unique-key clash at INSERT, a path of its own in many servers), the write-time failure the kit
    provokes from the profile alone. The id is created first, through `endpoint` (a setup step: a
    refusal is an ERROR), and confirmed by the read endpoint where the profile declares one, else by
    that batch's own result for it; the returned item is another template with the same id. Items
    that carry no id (`items.id_field: null`) cannot name a taken id: callers check `items.has_ids`."""
    existing = items.one()
    item_id = items.id_of(existing)
    resp = setup_ok(target.batch([existing], endpoint=endpoint, note=what),
                    "creating an item through the batch endpoint")
    if target.profile.has("endpoints.read"):
        if not target.exists(item_id):
            setup_failed("an item created through the batch endpoint is not readable")
    else:
        r = target.envelope.result_map(resp, [existing]).get(item_id) if json_of(resp) is not None else None
        if r is None or r.ok is not True:
            setup_failed(f"the one-item batch creating {item_id!r} did not answer ok for it: "
                         f"{short(r.raw if r is not None else resp.text, 200)}")
    return items.with_id(items.templates()[-1], item_id)


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, immutable scalars), several times faster
    than copy.deepcopy, which keeps a memo of every object: the kit copies a profile's item
    templates tens of thousands of times a run (grown jobs, 10,000-item batches; issue 18). Any
    other container falls back to copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    return copy.deepcopy(value)


def response_json(resp: Any, what: str = "the response") -> Any:
    """The body as JSON, or a violation saying it is not JSON."""
    doc = json_of(resp)
    expect(doc is not None, f"{what} is not JSON", expected="a JSON body",
           seen=f"{resp.status_code} {resp.headers.get('content-type', '')}: {short(resp.text, 200)}")
    return doc


def without_fields(doc: Any, fields: Any) -> Any:
    """A copy of `doc` without the members `fields` name (bare names or JSON Pointers at any depth,
    such as items.server_fields `/meta/updatedAt`): what is left is what two answers must agree on."""
    if not isinstance(doc, (dict, list)):
        return doc
    out = copy.deepcopy(doc)
    for f in fields or []:
        tokens = _tokens(as_pointer(f)) if isinstance(f, str) and f else []
        node = out
        for t in tokens[:-1]:
            node = node.get(t) if isinstance(node, dict) else None
        if isinstance(node, dict) and tokens:
            node.pop(tokens[-1], None)
    return out


def as_stored(item: Any, stored: Any, id_pointer: str | None = None) -> Any:
    """The part of `item` that a resource read back (or an ok result's data) shows: the item itself
    where its members all appear in `stored` (the canonical case), else the first object on the way
    down the id pointer whose members all do: `{"Put": {"Item": {...}}}` is stored as its
    `/Put/Item` (DynamoDB-like writes). Where none fits, the item itself (so a dropped member still
    shows as a difference)."""
    if not isinstance(item, dict) or not isinstance(stored, dict):
        return item
    node: Any = item
    for token in [""] + (_tokens(id_pointer) if id_pointer else []):
        if token:
            node = node.get(token) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break
        if node and set(node) <= set(stored):
            return node
    return item


def is_2xx(resp: Any) -> bool:
    return 200 <= resp.status_code < 300


def outcomes(envelope: Envelope, resp: Any, batch: list[dict[str, Any]]) -> dict[Any, tuple]:
    """Per item id, what the answer said of it (ok, error code, data): two answers to the same batch
    compare equal when they report the same outcome for every item, in any order."""
    return {rid: (r.ok, r.error_code, r.data) for rid, r in envelope.result_map(resp, batch).items()}


def effects(target: Target, profile: Profile, ids: list[Any]) -> dict[Any, Any]:
    """Per item, read through `target`'s read endpoint: its effect counter where the profile declares
    `items.effect_counter`, else the whole read resource (None: absent). Effects are verified this
    way, never taken from a response."""
    pointer = profile.get("items.effect_counter")
    out: dict[Any, Any] = {}
    for item_id in ids:
        doc = target.read_json(item_id)
        out[item_id] = None if doc is None else (pointer_get(doc, pointer, doc) if pointer else doc)
    return out


def canonical_results(results: list[Result], ids: list[Any] | None = None) -> dict[str, Any]:
    """The results re-expressed in the canonical shape (for schema checks whatever the envelope);
    `ids` gives position-correlated results the ids of their items."""
    out = []
    for i, r in enumerate(results):
        rid = r.id if ids is None or r.id is not None else (ids[i] if i < len(ids) else None)
        doc: dict[str, Any] = {"id": rid, "status": "ok" if r.ok else ("error" if r.ok is False else r.status)}
        if r.ok:
            doc["data"] = r.data
        elif r.ok is False:
            err = r.error if isinstance(r.error, dict) else {}
            code = r.error_code if r.error_code is not None else err.get("code")
            # a number is a code too (compared by value); the canonical schema spells codes as strings
            doc["error"] = {"code": str(code) if is_code(code) and not isinstance(code, str) else code,
                            "message": r.error_message if r.error_message is not None else err.get("message")}
        out.append(doc)
    return {"results": out}
