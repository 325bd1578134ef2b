"""ROB-01: schemathesis generates cases from the target's OpenAPI; the kit's Target sends them.

Sending through the Target (not schemathesis's own transport) keeps every fuzzed exchange as
redacted evidence with a curl line, honours the profile's timeout, pace and auth, and guarantees
the requests go to the target only. schemathesis judges each answer with its response checks
(5xx, undocumented status, body outside the documented schema, undocumented content type).
"""
from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx

from . import _live, _openapi
from ._client import AnswerTooLong

_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "authorization", "cookie"}


def load_openapi(target: Any, profile: Any) -> tuple[dict[str, Any] | None, str]:
    """The target's OpenAPI document (fetched through the Target, so it is evidence) or (None, why not)."""
    return _openapi.load(target, profile)


@dataclass
class Finding:
    mode: str
    operation: str
    problem: str
    request: str
    curl: str


@dataclass
class FuzzRun:
    sent: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    stopped: str | None = None
    noise: dict[str, int] = field(default_factory=dict)  # per operation: spec-legal answers schemathesis flags
    over_budget: set[str] = field(default_factory=set)  # operation+mode whose time budget ran out
    not_generated: set[str] = field(default_factory=set)  # operation+mode schemathesis could make no case for


def all_operations(schema: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """Every operation the document declares (path, operation), and the ones schemathesis cannot use."""
    found: list[tuple[str, Any]] = []
    broken: list[str] = []
    for result in schema.get_all_operations():
        if hasattr(result, "err"):  # an Err: a part of the document schemathesis cannot resolve
            exc = result.err()
            text = str(exc).strip().splitlines()
            broken.append(f"{type(exc).__name__}: {text[0] if text else ''}"[:200])
            continue
        op = result.ok()
        found.append((op.path, op))
    return found, broken


def batch_paths(profile: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of the profile's batch endpoints: the spec lets them answer 2xx to invalid items."""
    out = set()
    for name in ("batch", "atomic", "async"):
        ep = profile.get(f"endpoints.{name}")
        if ep:
            out.add((ep.get("method", "POST").upper(), ep["path"]))
    return out


def batch_operations(schema: Any, profile: Any) -> tuple[list[tuple[str, Any]], list[str]]:
    """The schema's operations of the profile's batch endpoints (batch, atomic, async), each once."""
    found: list[tuple[str, Any]] = []
    missing: list[str] = []
    seen: set[tuple[str, str]] = set()
    for name in ("batch", "atomic", "async"):
        ep = profile.get(f"endpoints.{name}")
        if not ep:
            continue
        method = ep.get("method", "POST").upper()
        key = (method, ep["path"])
        if key in seen:
            continue
        seen.add(key)
        op = schema.find_operation_by_path(method, ep["path"])
        if op is None:
            missing.append(f"{method} {ep['path']}")
        else:
            found.append((ep["path"], op))
    return found, missing


def _send(target: Any, path: str, case: Any) -> httpx.Response:
    kw = case.as_transport_kwargs(base_url="http://fuzz.invalid")  # only the parts are used, never the URL
    headers = {k: str(v) for k, v in (kw.get("headers") or {}).items()
               if k.lower() not in _HOP_HEADERS and v != _STEER}
    content: bytes | None = None
    if "json" in kw:
        try:
            content = json.dumps(kw["json"], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: send them escaped
            content = json.dumps(kw["json"]).encode("utf-8")
    elif kw.get("data") is not None:
        data = kw["data"]
        content = data if isinstance(data, bytes) else str(data).encode("utf-8")
    url = case.formatted_path if "{" in case.path else path
    return target.request(case.method.upper(), url, content=content, headers=headers,
                          params=kw.get("params") or None, note="ROB-01 fuzzed case")


def _judge(case: Any, resp: httpx.Response, *, negative: bool = False, lenient: bool = False,
           noise: list[str] | None = None) -> str | None:
    from schemathesis.checks import (
        content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance,
    )
    from schemathesis.specs.openapi.checks import negative_data_rejection

    if resp.status_code >= 500:
        return f"answered {resp.status_code}"
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if negative:
        checks.append(negative_data_rejection)
    return _validate(case, resp, checks, lenient=lenient, noise=noise)


def _validate(case: Any, resp: httpx.Response, checks: list[Any], *, lenient: bool = False,
              noise: list[str] | None = None) -> str | None:
    from schemathesis.core.transport import Response

    # The request inside the wrapped response carries no credentials: failure texts may quote it.
    import requests

    req = requests.Request(method=resp.request.method, url=str(resp.request.url)).prepare()
    wrapped = Response(status_code=resp.status_code, headers={k: [v] for k, v in resp.headers.items()},
                       content=resp.content, request=req, elapsed=0.0, verify=True,
                       message=resp.reason_phrase, http_version="1.1", encoding=resp.encoding)
    try:
        case.validate_response(wrapped, checks=checks)
    except BaseException as exc:  # a Failure, or a FailureGroup (a BaseExceptionGroup)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        parts = getattr(exc, "exceptions", None) or [exc]
        texts = []
        for p in parts:
            title = getattr(p, "title", type(p).__name__)
            message = (getattr(p, "message", "") or str(p)).strip().splitlines()
            text = f"{title}: {message[0] if message else ''}"[:300]
            if type(p).__name__ == NOISE and 400 <= resp.status_code < 500:
                continue  # invalid data refused with a 4xx schemathesis does not list (413 for a too-large batch)
            if lenient and type(p).__name__ == NOISE and 200 <= resp.status_code < 300:
                if noise is not None:  # a batch endpoint's 2xx with per-item errors: the spec's rule
                    noise.append(text)
                continue
            texts.append(text)
        return f"answered {resp.status_code}: " + "; ".join(texts) if texts else None
    return None


NOISE = "AcceptedNegativeData"  # schemathesis' negative_data_rejection failure ("Schema-violating request accepted")


# Every operation and mode sends at least this many cases, whatever the time budget says: without a
# floor, what ROB-01 observes (and which defects it finds) would depend on the machine's load.
MIN_EXAMPLES = 5

_STEER = "batchspec-steer"  # the placeholder value of an optional header in body-only negative cases: never sent


class _Enough(Exception):
    """Raised from inside a generated case to end hypothesis's run (budget spent, or the run stopped):
    returning instead would let hypothesis go on generating cases nobody sends, the costly part
    (schemathesis takes 20-40 ms a case on a quiet machine, far more than a fast target's answer)."""


# Keywords of a path parameter's schema that leave it any string: its type, and annotations.
_UNCONSTRAINED = {"type"} | _openapi.ANNOTATIONS


def negatable(operation: Any) -> bool:
    """Whether schemathesis can make a negative case of `operation` at all. Not when its only inputs
    are path parameters that are plain strings (`GET /orders/{id}`): every path segment is a string,
    so there is nothing to violate. Anything else (a body, a query or header parameter, a path
    parameter with a type or constraint) is left to schemathesis to try."""
    if operation.body:
        return True
    for param in operation.iter_parameters():
        location = getattr(param.location, "value", param.location)
        definition = getattr(param, "definition", None)
        if location != "path" or not isinstance(definition, dict):
            return True
        # OpenAPI 3 puts the constraints under `schema`; Swagger 2 beside `name` and `in`.
        schema = definition["schema"] if "schema" in definition else \
            {k: v for k, v in definition.items() if k not in ("name", "in", "required")}
        if not isinstance(schema, dict) or set(schema) - _UNCONSTRAINED or schema.get("type", "string") != "string":
            return True
    return False


def fuzz(target: Any, path: str, operation: Any, mode_name: str, *, max_examples: int, seed: int,
         run: FuzzRun, redact: Any, budget_s: float | None = None, lenient: bool = False,
         path_values: dict[str, Any] | None = None, min_examples: int = MIN_EXAMPLES) -> None:
    """Generate up to `max_examples` cases of `operation` in one mode and send each through the Target.

    `budget_s` bounds the wall time of this operation and mode once `min_examples` cases were sent
    (cases past it are neither generated nor sent);
    `lenient`: a batch endpoint, where a 2xx to a body with invalid items is the spec's rule (per-item
    errors), so schemathesis' "schema-violating request accepted" is noise there, counted apart;
    `path_values` replace generated path parameters (a real job id, so reads reach a resource).

    The negative mode of an operation with a body and optional headers is split in two halves
    (examples and budget halved): schemathesis's own cases (any mix of broken headers and body), and
    body-only cases that leave the optional headers out (``negative-body``). A negative case that
    breaks an optional header (an invalid ``Idempotency-Key``: about half of them on a batch
    operation) is refused before its body is read; the body-only half puts every case on the path
    where a body is parsed and processed."""
    if mode_name == "negative" and not negatable(operation):
        # What hypothesis would conclude after ~450 futile draws (0.5-0.6 s each time): nothing to send.
        run.not_generated.add(f"negative {operation.method.upper()} {operation.path}")
        return
    optional = [p.name for p in operation.headers if not p.is_required] if operation.body else []
    if mode_name != "negative" or not optional:
        _fuzz_mode(target, path, operation, mode_name, max_examples=max_examples, seed=seed, run=run,
                   redact=redact, budget_s=budget_s, lenient=lenient, path_values=path_values,
                   min_examples=min_examples)
        return
    half = max(1, max_examples // 2)
    for sub, steer, examples, sub_seed in (("negative", None, max_examples - half, seed),
                                           ("negative-body", optional, half, seed + 1)):
        _fuzz_mode(target, path, operation, sub, max_examples=max(1, examples), seed=sub_seed, run=run,
                   redact=redact, budget_s=None if budget_s is None else budget_s / 2, lenient=lenient,
                   path_values=path_values, min_examples=(min_examples + 1) // 2, steer=steer)


def _fuzz_mode(target: Any, path: str, operation: Any, mode_name: str, *, max_examples: int, seed: int,
               run: FuzzRun, redact: Any, budget_s: float | None, lenient: bool,
               path_values: dict[str, Any] | None, min_examples: int, steer: list[str] | None = None) -> None:
    import time

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from schemathesis import GenerationMode

    mode = GenerationMode.POSITIVE if mode_name == "positive" else GenerationMode.NEGATIVE
    label = f"{operation.method.upper()} {operation.path}"
    end = None if budget_s is None else time.monotonic() + budget_s
    sent = [0]
    # Explicit values keep schemathesis from breaking these headers; _send leaves them out.
    explicit = {"headers": {name: _STEER for name in steer}} if steer else {}

    @hseed(seed)
    @settings(max_examples=max_examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(case=operation.as_strategy(generation_mode=mode, **explicit))
    def one(case: Any) -> None:
        if run.stopped:
            raise _Enough
        if end is not None and sent[0] >= min_examples and time.monotonic() > end:
            run.over_budget.add(f"{mode_name} {label}")
            raise _Enough
        sent[0] += 1
        if path_values and mode_name == "positive":
            case.path_parameters = {**(case.path_parameters or {}),
                                    **{k: v for k, v in path_values.items() if k in (case.path_parameters or {})}}
        run.sent += 1
        _live.tick(f"ROB-01 fuzzing {label} ({mode_name}): {run.sent} cases sent")
        try:
            resp = _send(target, path, case)
        except httpx.TimeoutException:
            problem = "no answer within the timeout (a hang)"
            run.stopped = f"stopped after a hang ({mode_name} {label})"
            resp = None
        except httpx.TransportError as exc:
            problem = f"the connection failed ({type(exc).__name__}): the target dropped it or went down"
            run.stopped = f"stopped after a dropped connection ({mode_name} {label})"
            resp = None
        except AnswerTooLong as exc:
            problem = str(exc)
            run.stopped = f"stopped after an answer that did not end ({mode_name} {label})"
            resp = None
        else:
            cls = f"{resp.status_code // 100}xx"
            run.by_status[cls] = run.by_status.get(cls, 0) + 1
            noise: list[str] = []
            problem = _judge(case, resp, negative=mode.is_negative, lenient=lenient, noise=noise)
            if noise:
                run.noise[label] = run.noise.get(label, 0) + 1
        if problem:
            ex = target.evidence[-1] if target.evidence else None
            run.findings.append(Finding(mode_name, label, redact(problem) or problem,
                                        (ex.request_body or "")[:300] if ex else "", ex.curl if ex else ""))

    from hypothesis.errors import Unsatisfiable

    try:
        with _no_local_constants():
            one()
    except Unsatisfiable:  # e.g. no way to violate an unconstrained string path parameter: nothing to send
        run.not_generated.add(f"{mode_name} {label}")
    except _Enough:
        pass


def warm() -> None:
    """Import schemathesis and build a two-operation document with it, sending nothing: what a child
    process (conformance._child) does while the kit starts, so that ROB-01 there does not pay for
    those imports (~0.4-0.6 s of CPU: schemathesis's OpenAPI support, hypothesis, requests, werkzeug)
    after its check arrives. No case is drawn here: the child is forked once the kit's modules are
    imported, and the warm-up then ran past the moment the check arrived (at ~1.25 s against ~0.9 s
    on the embedded run), so drawing cases of a toy document only delayed the real ones; measured,
    ROB-01 took no longer without them (docs/performance.md, round 13)."""
    import schemathesis  # hypothesis comes with its OpenAPI support (from_dict)

    item = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "n": {"type": "integer"}}}
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": item}}}}}}
    doc = {"openapi": "3.0.3", "info": {"title": "warm", "version": "1"}, "paths": {
        "/b": {"post": {"requestBody": body, "responses": {"200": {"description": "ok"}}}}}}
    all_operations(schemathesis.openapi.from_dict(doc))


@contextlib.contextmanager
def _no_local_constants() -> Iterator[None]:
    """Hypothesis (6.131+) mixes constants mined from the source of "local" modules into what it
    draws: every imported module outside site-packages, so the kit's own code (and an in-process
    target's) under an editable install, but not under `pip install .`. That made ROB-01's cases
    depend on how the kit was installed, and the first run in each directory paid the mining:
    +3 s and +130 MiB of peak memory (over issue 18's 200 MB), cached in ./.hypothesis/constants.
    A black-box fuzzer of a remote target has no business reading its own source: off while ROB-01
    draws. Internal to hypothesis, hence the guard: without the hook nothing changes."""
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - another hypothesis layout: nothing to turn off
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    empty = getattr(providers, "_local_constants", None)
    if original is None or empty is None:
        yield
        return
    blank = copy.deepcopy(empty)  # the same (sorted) containers, emptied: what hypothesis expects
    for name in ("integers", "floats", "bytes", "strings"):
        getattr(blank, name, set()).clear()
    providers._get_local_constants = lambda: blank
    try:
        yield
    finally:
        providers._get_local_constants = original


def _resolved_body_schema(alternative: Any) -> Any:
    """The body's schema with its top-level reference followed (schemathesis bundles the document's
    references under `x-bundled`), or None."""
    schema = getattr(alternative, "optimized_schema", None)
    for _ in range(8):
        ref = schema.get("$ref") if isinstance(schema, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/x-bundled/"):
            break
        schema = (getattr(alternative, "optimized_schema", None) or {}).get("x-bundled", {}).get(ref.rsplit("/", 1)[1])
    return schema if isinstance(schema, dict) else None


def wrong_type_bodies(operation: Any) -> tuple[str | None, list[tuple[str, Any]]]:
    """(media type, [(what, body)]): JSON bodies of another type than the operation's documented JSON
    body (an array, a string, a number, null where an object is documented; an empty object where
    properties are required). What a fuzzer tries first, made without generating anything; each
    one reaches the target's handling of a malformed body (the envelope's 400 of a batch endpoint),
    which hypothesis's negative cases reach only now and then."""
    for alt in operation.body:
        media = alt.media_type or ""
        if "json" not in media.lower():
            continue
        schema = _resolved_body_schema(alt)
        kind = schema.get("type") if schema else None
        others = [("an array", []), ("an object", {}), ("a string", "batchspec"), ("a number", 0), ("null", None)]
        if kind == "object":
            out = [o for o in others if o[0] != "an object"]
            if schema.get("required"):
                out.append(("an empty object (required members missing)", {}))
            return media, out
        if kind == "array":
            out = [o for o in others if o[0] != "an array"]
            if int(schema.get("minItems") or 0) > 0:
                out.append(("an empty array (minItems)", []))
            return media, out
        return media, []
    return None, []


def structural(target: Any, path: str, operation: Any, *, run: FuzzRun, redact: Any, lenient: bool) -> None:
    """Send `wrong_type_bodies` to an operation without path parameters; judge each answer with the
    same checks as a generated case. On a batch endpoint (`lenient`) a 2xx is left to the other
    rules (a foreign envelope may take more than one shape); elsewhere a 2xx accepted invalid data."""
    if "{" in path or run.stopped:
        return
    media, bodies = wrong_type_bodies(operation)
    label = f"{operation.method.upper()} {operation.path}"
    for what, body in bodies:
        content = json.dumps(body).encode("utf-8")
        try:
            resp = target.request(operation.method.upper(), path, content=content, headers={"Content-Type": media},
                                  note=f"ROB-01 a body of the wrong type: {what}")
        except httpx.TimeoutException:
            run.stopped = f"stopped after a hang (a body of the wrong type, {label})"
            run.findings.append(Finding("structural", label, f"{what}: no answer within the timeout (a hang)", "", ""))
            return
        except httpx.TransportError as exc:
            run.stopped = f"stopped after a dropped connection (a body of the wrong type, {label})"
            run.findings.append(Finding("structural", label, f"{what}: the connection failed ({type(exc).__name__})",
                                        "", ""))
            return
        run.sent += 1
        cls = f"{resp.status_code // 100}xx"
        run.by_status[cls] = run.by_status.get(cls, 0) + 1
        case = operation.Case(body=body, media_type=media)
        problem = _judge(case, resp, lenient=lenient)
        if problem is None and 200 <= resp.status_code < 300 and not lenient:
            problem = f"answered {resp.status_code}: a body of the wrong type was accepted"
        if problem:
            ex = target.evidence[-1] if target.evidence else None
            run.findings.append(Finding("structural", label, redact(f"{what}: {problem}") or problem,
                                        content.decode()[:300], ex.curl if ex else ""))


UNDECLARED = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def probe_methods(target: Any, path: str, declared: set[str], path_values: dict[str, Any], run: FuzzRun,
                  redact: Any) -> None:
    """Methods the document does not declare for `path`: never a 5xx, and a 405 names in `Allow`
    every declared method (RFC 9110 §15.5.6; schemathesis' unsupported_method check, which its
    generate phase alone never exercises). OPTIONS may also be answered 2xx (CORS, RFC 9110 §9.3.7)."""
    import re

    url = re.sub(r"\{([^}]+)\}", lambda m: str(path_values.get(m.group(1), "batchspec-no-such-id")), path)
    for method in UNDECLARED:
        if method in declared or ("GET" in declared and method == "HEAD"):
            continue
        label = f"{method} {path}"
        try:
            resp = target.request(method, url, note=f"ROB-01 undeclared method {method}")
        except httpx.HTTPError as exc:
            run.findings.append(Finding("method", label, f"the request failed: {type(exc).__name__}", "", ""))
            continue
        run.sent += 1
        cls = f"{resp.status_code // 100}xx"
        run.by_status[cls] = run.by_status.get(cls, 0) + 1
        problem = None
        if resp.status_code >= 500:
            problem = f"answered {resp.status_code}"
        elif resp.status_code == 405:
            allow = {m.strip().upper() for m in resp.headers.get("allow", "").split(",") if m.strip()}
            left_out = sorted(declared - allow)
            if not resp.headers.get("allow"):
                problem = "answered 405 without an Allow header"
            elif left_out:
                problem = f"answered 405 with Allow: {resp.headers.get('allow')}, leaving out {', '.join(left_out)}"
        if problem:
            ex = target.evidence[-1] if target.evidence else None
            run.findings.append(Finding("method", label, redact(problem) or problem, "", ex.curl if ex else ""))
