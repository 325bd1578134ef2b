"""What the suites import: the vocabulary of a check (the only module a suite imports from the kit).

The target (`Target`: HTTP calls, `Target.raw` for what httpx cannot send), the envelope
(`Envelope`, `Result`), items (`ItemFactory`, `mixed_batch`), verdict helpers (`expect`,
`setup_failed`, `observed`), and the kit's readers: `openapi` (the target's OpenAPI document),
`hostile` (the ROB-02 corpus), `fuzz` (schemathesis), `schema_errors`, async jobs (`Jobs`).
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from . import _fuzz as fuzz
from . import _hostile as hostile
from . import _openapi as openapi
from ._callback import CallbackReceiver, loopback_host
from ._client import SetupError, Target, retry_after_seconds
from ._envelope import Envelope, Result, json_of, is_json_content_type, pointer_get, pointer_set
from ._jobs import COUNTS, STATUSES, TERMINAL, Jobs, Snapshot, by_id, fingerprint
from ._profile import Profile
from ._rawhttp import RawOutcome
from ._schemas import errors as schema_errors

__all__ = [
    "RuleViolation",
    "SetupError",
    "expect",
    "setup_failed",
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
# Keyed by the running test's node id (pytest sets PYTEST_CURRENT_TEST for the test being run), so a
# note reaches the right outcome without a check passing anything around.
_OBSERVED: dict[str, list[str]] = {}
_observed_lock = threading.Lock()


def _current_check() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


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
        self.id_field = profile.get("items.id_field", "id")
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

    def with_id(self, template: dict[str, Any], item_id: str | None = None) -> dict[str, Any]:
        item = dict(template)
        item[self.id_field] = item_id or self.new_id()
        return item

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

    id_field: str = "id"

    @property
    def ids(self) -> list[str]:
        return [it[self.id_field] for it in self.items]


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
    return Mixed(out, [v[items.id_field] for v in valid], {b.item[items.id_field]: b for b in bad}, items.id_field)


def response_json(resp: Any, what: str = "the response") -> Any:
    """The body as JSON, or a violation saying it is not JSON."""
    doc = json_of(resp)
    expect(doc is not None, f"{what} is not JSON", expected="a JSON body",
           seen=f"{resp.status_code} {resp.headers.get('content-type', '')}: {short(resp.text, 200)}")
    return doc


def is_2xx(resp: Any) -> bool:
    return 200 <= resp.status_code < 300


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
            doc["error"] = {"code": r.error_code if r.error_code is not None else err.get("code"),
                            "message": r.error_message if r.error_message is not None else err.get("message")}
        out.append(doc)
    return {"results": out}
