"""Ledger bulk API: a small batch API that is NOT shaped like the spec's canonical envelope.

It exists to prove that a batch API the kit has never seen is checked from a profile alone
(tests/thirdparty/ledger.yaml, written only from this documentation and the profile schema).

API documentation
-----------------
POST /v2/ledger:bulk   Content-Type: application/json
    Body: a bare JSON array of entries `{"ref": "<client reference>", "amount": <number > 0>, "memo"?: str}`.
    At most 50 entries. Entries are independent; each is stored or rejected on its own.
    200 {"outcomes": [...], "tally": {"received", "stored", "rejected"}, "hadErrors": bool}
        outcomes[i] is the outcome of entry i (same order, no reference echoed):
        stored:   {"http": 201, "entry": {...the stored entry...}}
        rejected: {"http": 422 | 409, "problem": {"kind": "...", "detail": "...", "transient": false}}
        kinds: amount-not-positive, amount-missing, ref-exists (409: the ref was stored before).
    Batch-level faults: {"fault": "urn:ledger:fault:<kind>", "text": "..."}
        400 no-entries (empty array), 400 not-an-array, 400 bad-json, 400 bad-entry (an entry
        that is not an object or has no string ref), 409 ref-repeated (a ref twice in one
        request, named in the text; nothing is stored), 413 too-many-entries ("at most 50
        entries; got N"), 415 wrong-media-type.
GET /v2/ledger/{ref}    200 the entry, 404 {"fault": "urn:ledger:fault:unknown-ref", ...}
"""
from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_ENTRIES = 50


def _fault(status: int, kind: str, text: str) -> JSONResponse:
    return JSONResponse({"fault": f"urn:ledger:fault:{kind}", "text": text}, status_code=status)


def _problem(status: int, kind: str, detail: str) -> dict[str, Any]:
    return {"http": status, "problem": {"kind": kind, "detail": detail, "transient": False}}


def create_app(bugs: frozenset[str] = frozenset()) -> Starlette:
    """`bugs` plants known defects (the kit's tests prove each is caught through the profile):
    reversed_outcomes, lying_tally, stores_rejected, mixed_is_422."""
    store: dict[str, dict[str, Any]] = {}

    async def bulk(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _fault(415, "wrong-media-type", f"send application/json, not {ctype or 'nothing'}")
        try:
            entries = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _fault(400, "bad-json", "the body is not JSON")
        if not isinstance(entries, list):
            return _fault(400, "not-an-array", "the body must be a JSON array of entries")
        if not entries:
            return _fault(400, "no-entries", "send at least one entry")
        if len(entries) > MAX_ENTRIES:
            return _fault(413, "too-many-entries", f"at most {MAX_ENTRIES} entries; got {len(entries)}")
        refs: set[str] = set()
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("ref"), str) or not e["ref"]:
                return _fault(400, "bad-entry", "every entry is an object with a string ref")
            if e["ref"] in refs:
                return _fault(409, "ref-repeated", f"ref {e['ref']} appears twice; nothing was stored")
            refs.add(e["ref"])
        outcomes = []
        for e in entries:
            amount = e.get("amount")
            if "amount" not in e:
                outcomes.append(_problem(422, "amount-missing", "amount is required"))
            elif isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                outcomes.append(_problem(422, "amount-not-positive", f"amount must be > 0, got {amount!r}"))
                if "stores_rejected" in bugs:
                    store[e["ref"]] = dict(e)
            elif e["ref"] in store:
                outcomes.append(_problem(409, "ref-exists", f"ref {e['ref']} was stored before"))
            else:
                store[e["ref"]] = dict(e)
                outcomes.append({"http": 201, "entry": dict(e)})
        stored = sum(1 for o in outcomes if o["http"] == 201)
        if "reversed_outcomes" in bugs:
            outcomes.reverse()
        tally = {"received": len(entries), "stored": stored, "rejected": len(entries) - stored}
        if "lying_tally" in bugs:
            tally["rejected"] = 0
        status = 422 if "mixed_is_422" in bugs and 0 < stored < len(entries) else 200
        return JSONResponse({"outcomes": outcomes, "tally": tally, "hadErrors": stored < len(entries)},
                            status_code=status)

    async def read(request: Request) -> JSONResponse:
        ref = request.path_params["ref"]
        if ref not in store:
            return _fault(404, "unknown-ref", f"no entry {ref}")
        return JSONResponse(store[ref])

    return Starlette(routes=[Route("/v2/ledger:bulk", bulk, methods=["POST"]),
                             Route("/v2/ledger/{ref}", read, methods=["GET"])])
