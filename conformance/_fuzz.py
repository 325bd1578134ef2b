"""ROB-01: schemathesis generates cases from the target's OpenAPI; the kit's Target sends them.

Sending through the Target (not schemathesis's own transport) keeps every fuzzed exchange as
redacted evidence with a curl line, honours the profile's timeout, pace and auth, and guarantees
the requests go to the target only. schemathesis judges each answer with its response checks
(5xx, undocumented status, body outside the documented schema, undocumented content type).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from . import _openapi

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


# The budget of one operation in one mode. Generating a case from a batch schema costs schemathesis
# ~20-40 ms (far more than a reference-server answer), so a count alone makes ROB-01's time grow with
# the document; a time budget bounds it. Every operation and mode still gets at least
# BUDGET_MIN_EXAMPLES cases (a defect that any malformed input shows is found in the first few), and
# the cases a budget cut are counted in FuzzRun.cut, so the report says what was not sent.
BUDGET_S = 0.6
BUDGET_MIN_EXAMPLES = 12


@dataclass
class FuzzRun:
    sent: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    stopped: str | None = None
    cut: dict[str, int] = field(default_factory=dict)
    """``"<mode> <METHOD path>"`` -> cases sent when the time budget ended that operation's run early."""


class _BudgetSpent(Exception):
    """Raised from inside a generated case to end hypothesis's run once the budget is spent."""


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


def _judge(case: Any, resp: httpx.Response) -> str | None:
    from schemathesis.checks import (
        content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance,
    )
    from schemathesis.core.transport import Response

    if resp.status_code >= 500:
        return f"answered {resp.status_code}"
    # The request inside the wrapped response carries no credentials: failure texts may quote it.
    import requests

    req = requests.Request(method=resp.request.method, url=str(resp.request.url)).prepare()
    wrapped = Response(status_code=resp.status_code, headers={k: [v] for k, v in resp.headers.items()},
                       content=resp.content, request=req, elapsed=0.0, verify=True,
                       message=resp.reason_phrase, http_version="1.1", encoding=resp.encoding)
    try:
        case.validate_response(wrapped, checks=[not_a_server_error, status_code_conformance,
                                                content_type_conformance, response_schema_conformance])
    except BaseException as exc:  # a Failure, or a FailureGroup (a BaseExceptionGroup)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        parts = getattr(exc, "exceptions", None) or [exc]
        texts = []
        for p in parts:
            title = getattr(p, "title", type(p).__name__)
            message = (getattr(p, "message", "") or str(p)).strip().splitlines()
            texts.append(f"{title}: {message[0] if message else ''}"[:300])
        return f"answered {resp.status_code}: " + "; ".join(texts)
    return None


_STEER = "batchspec-steer"  # a placeholder value of an optional header: never sent


def fuzz(target: Any, path: str, operation: Any, mode_name: str, *, max_examples: int, seed: int,
         run: FuzzRun, redact: Any, budget_s: float | None = BUDGET_S,
         min_examples: int = BUDGET_MIN_EXAMPLES) -> None:
    """Generate up to `max_examples` cases of `operation` in one mode and send each through the Target.

    Once `min_examples` were sent and `budget_s` seconds have passed (``None``: no budget), the
    run ends; ``run.cut`` records it.

    The negative mode is split in two halves (examples, budget and minimum each halved). The first
    is schemathesis's own: it breaks any mix of headers and body. The second breaks the body only and
    leaves the optional headers out: a negative case that breaks an optional header (an invalid
    ``Idempotency-Key``, about half of them on a batch operation) is refused before its body is read,
    so the body-only half puts every case on the path where a batch is parsed and processed."""
    optional = [p.name for p in operation.headers if not p.is_required] if operation.body else []
    if mode_name != "negative" or not optional:
        _fuzz_mode(target, path, operation, mode_name, max_examples=max_examples, seed=seed, run=run,
                   redact=redact, budget_s=budget_s, min_examples=min_examples)
        return
    half = max(1, max_examples // 2)
    for sub, steer, examples, sub_seed in (("negative", None, max_examples - half, seed),
                                           ("negative-body", optional, half, seed + 1)):
        _fuzz_mode(target, path, operation, sub, max_examples=max(1, examples), seed=sub_seed, run=run,
                   redact=redact, budget_s=None if budget_s is None else budget_s / 2,
                   min_examples=max(1, (min_examples + 1) // 2), steer=steer)


def _fuzz_mode(target: Any, path: str, operation: Any, mode_name: str, *, max_examples: int, seed: int,
               run: FuzzRun, redact: Any, budget_s: float | None, min_examples: int,
               steer: list[str] | None = None) -> None:
    import time

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from schemathesis import GenerationMode

    mode = GenerationMode.POSITIVE if mode_name == "positive" else GenerationMode.NEGATIVE
    label = f"{operation.method.upper()} {operation.path}"
    # Explicit values keep schemathesis from breaking these headers; _send leaves them out.
    explicit = {"headers": {name: _STEER for name in steer}} if steer else {}

    @hseed(seed)
    @settings(max_examples=max_examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(case=operation.as_strategy(generation_mode=mode, **explicit))
    def one(case: Any) -> None:
        if run.stopped:
            return
        if budget_s is not None and sent[0] >= min_examples and time.monotonic() > deadline:
            raise _BudgetSpent
        sent[0] += 1
        run.sent += 1
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
        else:
            cls = f"{resp.status_code // 100}xx"
            run.by_status[cls] = run.by_status.get(cls, 0) + 1
            problem = _judge(case, resp)
        if problem:
            ex = target.evidence[-1] if target.evidence else None
            run.findings.append(Finding(mode_name, label, redact(problem) or problem,
                                        (ex.request_body or "")[:300] if ex else "", ex.curl if ex else ""))

    sent = [0]
    deadline = time.monotonic() + (budget_s or 0.0)
    try:
        one()
    except _BudgetSpent:
        run.cut[f"{mode_name} {label}"] = sent[0]
