"""The HTTP side of the kit: one client per check, every exchange kept as redacted evidence."""
from __future__ import annotations

import copy
import json
import hashlib
import re
import shlex
import ssl
import threading
import time
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import orjson

from . import _rawhttp
from ._down import Watch
from ._envelope import Envelope, loads_json
from ._model import Exchange
from ._profile import Profile
from ._rawhttp import RawOutcome

REDACTED = "<redacted>"
SENSITIVE_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
# Header names that carry credentials (X-Amz-Security-Token, X-Goog-Api-Key, X-Signature, ...);
# an operation selector such as X-Amz-Target is not one.
_CREDENTIAL_NAME = re.compile(r"auth|token|secret|passw|api[-_]?key|session|cookie|signature|credential", re.I)


def is_credential_header(name: str) -> bool:
    return name.lower() in SENSITIVE_HEADERS or bool(_CREDENTIAL_NAME.search(name))
MAX_EVIDENCE_BODY = 4000


class SetupError(Exception):
    """The kit could not set up a check (ERROR, never a FAIL of the rule)."""


# A broken target may send an answer that never ends (an endless chunked body, a slow drip): read
# unbounded, it fills the kit's memory or holds the run forever. The body is read up to
# target.max_response_bytes (after decoding: a compressed bomb counts at its real size), within
# `target.timeout` seconds of the answer's headers (httpx's timeout is per read: a drip resets it).
DEFAULT_MAX_RESPONSE_BYTES = _rawhttp.DEFAULT_MAX_RESPONSE_BYTES


class AnswerTooLong(httpx.RequestError):
    """The answer's body passed `target.max_response_bytes`, or did not end within `target.timeout`
    seconds of its headers: the rest was not read (the check is an ERROR that says so). Not a
    transport error: the target answered, so it is not probed as one that stopped answering."""


def read_bounded(resp: httpx.Response, max_bytes: int, seconds: float) -> bytes:
    """``resp.read()`` for a response sent with ``stream=True``, bounded in size and time."""
    deadline = time.monotonic() + seconds
    parts: list[bytes] = []
    total = 0
    for chunk in resp.iter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise AnswerTooLong(f"the answer's body passed {max_bytes} bytes (target.max_response_bytes); "
                                "the rest was not read", request=resp.request)
        if time.monotonic() > deadline:
            raise AnswerTooLong(f"the answer's body did not end within {seconds:g}s of its headers "
                                f"(target.timeout; {total} bytes had come); the rest was not read",
                                request=resp.request)
        parts.append(chunk)
    resp._content = b"".join(parts)  # what Response.read() stores; httpx has no public setter
    return resp._content


class _SensitiveNames:
    """`name in names`: a credential header name, or one the profile marks secret (lower-case)."""

    def __init__(self, extra: set[str]):
        self.extra = extra

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (is_credential_header(name) or name.lower() in self.extra)


class Redactor:
    def __init__(self, secrets: Iterable[str], extra_headers: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # A bearer token can appear without its scheme: redact the bare token too.
        for s in list(self.secrets):
            if " " in s:
                tail = s.split(" ", 1)[1]
                if len(tail) >= 4:
                    self.secrets.append(tail)
        self.extra = {h.lower() for h in extra_headers}
        self.headers = _SensitiveNames(self.extra)

    def text(self, value: str | None) -> str | None:
        if value is None:
            return None
        for s in self.secrets:
            if s in value:
                value = value.replace(s, REDACTED)
        return value

    def header_map(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in headers:
            out[k] = REDACTED if k.lower() in self.headers else (self.text(v) or "")
        return out


def _host(url: httpx.URL) -> str:
    """The Host header of `url`: its netloc without credentials."""
    return url.netloc.decode("ascii").rsplit("@", 1)[-1]


def with_query(url: str, params: dict[str, Any] | list[tuple[str, Any]] | None) -> str:
    """`url` with `params` added after its own query, which is kept byte for byte. httpx's `params=`
    would replace the query of the URL it is given, and a URL the target handed out (a job's status
    URL, a signed link, a `?api-version=` endpoint path) means its query: the kit's own parameters
    (an endpoint's fixed query, a results cursor) come after it. Values are written as httpx writes
    them (true/false, an empty string for None)."""
    if not params:
        return url
    extra = str(httpx.QueryParams(params))
    if not extra:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


class _Encoded(bytes):
    """A JSON body already encoded by `_encode`: sent with the envelope's Content-Type, like `json_body`."""


# What orjson would encode otherwise than json is handed to json (see `_encode`): dataclasses,
# datetimes and subclasses of the JSON types go to orjson's `default`, which there is none of.
_ORJSON_AS_JSON = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _encode(json_body: Any) -> _Encoded:
    """How the kit puts JSON on the wire (one place: `batch_body` must give what `request` sends):
    compact UTF-8. orjson encodes it (a 1,000-item batch about ten times faster than json; issue 18),
    and json wherever orjson would write something else: a value orjson refuses (a number past 64
    bits, a key that is not a string, a lone surrogate, the types above: json then encodes it, or
    fails, as it always did), or `null` anywhere in orjson's output (orjson writes NaN and Infinity
    as null, json as NaN and Infinity, which a hostile item may mean to send)."""
    try:
        raw = orjson.dumps(json_body, option=_ORJSON_AS_JSON)
    except TypeError:  # orjson.JSONEncodeError
        raw = b"null"
    if b"null" in raw:
        raw = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Encoded(raw)


def _body_text(content: bytes | None) -> str | None:
    if content is None or content == b"":
        return None
    text = content[:MAX_EVIDENCE_BODY].decode("utf-8", errors="replace")
    if len(content) > MAX_EVIDENCE_BODY:
        text += f"... ({len(content)} bytes in all)"
    return text


def curl_command(method: str, url: str, headers: dict[str, str], body: bytes | None, sensitive: Any,
                 body_sink: Any = None) -> str:
    """A curl line that replays the request; secrets come from environment variables.

    A body too large to inline is named by its hash (`@bodies/<sha>.body`); `body_sink(name, body)`
    writes it under the report dir, so the line replays from there."""
    parts = ["curl", "-sS", "-X", method, shlex.quote(url)]
    for k, v in headers.items():
        if k.lower() in ("content-length", "host", "accept-encoding", "connection", "user-agent"):
            continue
        if k.lower() == "accept" and v == "*/*":
            continue
        if k.lower() in sensitive:
            var = "BATCHSPEC_" + "".join(c if c.isalnum() else "_" for c in k.upper())
            parts += ["-H", f'"{k}: ${var}"']
        else:
            parts += ["-H", shlex.quote(f"{k}: {v}")]
    if body:
        if len(body) > MAX_EVIDENCE_BODY:
            name = f"bodies/{hashlib.sha256(body).hexdigest()[:20]}.body"
            where = "run from the report dir"
            if body_sink is not None:
                body_sink(name, body)
            else:
                where = "not written: no report dir"
            parts += ["--data-binary", f"@{name}", f"# body of {len(body)} bytes ({where})"]
        else:
            parts += ["--data-binary", shlex.quote(body.decode("utf-8", errors="replace"))]
    return " ".join(parts)


class _Pacer:
    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.lock = threading.Lock()
        self.next_at = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        if at > now:
            time.sleep(at - now)


def tls_verify(target: dict[str, Any]) -> bool | str:
    """The one reading of `target.verify_tls` / `target.ca_bundle`, for httpx and the raw layer alike:
    `verify_tls: false` wins (no verification at all); otherwise the CA bundle if one is named, else
    the system's trust store."""
    if target.get("verify_tls", True) is False:
        return False
    return str(target["ca_bundle"]) if target.get("ca_bundle") else True


class Session:
    """What all checks of a run share: the profile, the httpx client(s), the pace, the redactor."""

    def __init__(self, profile: Profile, transport: httpx.BaseTransport | None = None):
        self.profile = profile
        self.transport = transport
        t = profile.target
        verify = self.verify = tls_verify(t)
        self.timeout = float(t.get("timeout") or 10)
        self.max_response_bytes = int(t.get("max_response_bytes") or DEFAULT_MAX_RESPONSE_BYTES)
        self.client = httpx.Client(
            base_url=profile.base_url,
            timeout=httpx.Timeout(self.timeout),
            verify=verify,
            follow_redirects=False,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        self.pacer = _Pacer(float(t.get("pace") or 0))
        self.redactor = Redactor(profile.secrets(), t.get("redact") or [])
        self.envelope = Envelope(profile.envelope, profile.id_field)
        self.watch = Watch()  # whether the target still answers (_down: a target that stops answering)

    @property
    def in_process(self) -> bool:
        return self.transport is not None

    def close(self) -> None:
        self.client.close()


class Target:
    """One check's view of the target. Every call returns an httpx.Response; every exchange is kept."""

    def __init__(self, session: Session, evidence: list[Exchange], credential: str = "primary"):
        self.session = session
        self.profile = session.profile
        self.evidence = evidence
        self.credential = credential
        self.origin: str | None = None  # another instance's base URL (FLEET), None for the base URL
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.origin or self.profile.base_url

    def on(self, base_url: str) -> "Target":
        """This check's view of another instance of the same service (``target.instances``): the same
        credential and evidence, every path joined to ``base_url`` instead of the base URL."""
        other = Target(self.session, self.evidence, self.credential)
        other.origin = None if base_url.rstrip("/") == self.profile.base_url else base_url.rstrip("/")
        other._lock = self._lock
        return other

    @property
    def in_process(self) -> bool:
        return self.session.in_process

    @property
    def stopped_answering(self) -> str | None:
        """`target stopped answering after <request>` once the target answers nothing (conformance._down)."""
        down = self.session.watch.down
        return down["message"] if down else None

    @property
    def envelope(self) -> Envelope:
        return self.session.envelope

    @property
    def timeout(self) -> float:
        """The profile's per-request timeout in seconds (target.timeout)."""
        return self.session.timeout

    def redact(self, text: str | None) -> str | None:
        """`text` with every secret of the profile replaced (for messages that quote the target)."""
        return self.session.redactor.text(text)

    def auth_headers(self) -> dict[str, str]:
        if self.credential == "second":
            return dict(self.profile.target.get("second_credential") or {})
        return dict(self.profile.target.get("headers") or {})

    def as_client(self, which: str = "second") -> "Target":
        if which == "second" and not self.profile.target.get("second_credential"):
            import pytest

            pytest.skip("profile declares no target.second_credential")
        other = Target(self.session, self.evidence, which)
        other.origin = self.origin
        return other

    def endpoint(self, name: str) -> dict[str, Any]:
        ep = self.profile.get(f"endpoints.{name}")
        if not ep:
            import pytest

            pytest.skip(f"profile declares no endpoints.{name}")
        return ep

    def url_for(self, name: str, **params: Any) -> str:
        from urllib.parse import quote

        path = self.endpoint(name)["path"]
        for k, v in params.items():
            path = path.replace("{" + k + "}", quote(str(v), safe=""))
        return path

    # -- requests -----------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        timeout: float | None = None,
        note: str | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        hdrs: dict[str, str] = {}
        if auth:
            hdrs.update(self.auth_headers())
        if json_body is not None:
            content = _encode(json_body)
        if json_body is not None or isinstance(content, _Encoded):
            hdrs.setdefault("Content-Type", self.envelope.content_type)
        hdrs.update(headers or {})
        retries = int(self.profile.target.get("retry_after_max", 3))
        url = path if self.origin is None or "://" in path else self.origin + path
        for attempt in range(retries + 1):
            resp = self._send(method, url, hdrs, content, params, timeout, note)
            if resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers:
                target = urljoin(str(resp.request.url), resp.headers["location"])
                if urlsplit(target).netloc != urlsplit(str(resp.request.url)).netloc:
                    self.note(f"redirect to another host not followed: {self.session.redactor.text(target)}")
                    return resp
                url = target
                # The Location is the whole URL to follow, its query included: the endpoint's query
                # was for the first URL, and sending it again would add to what the target chose.
                params = None
                if _redirect_as_get(resp.status_code, method):
                    # RFC 9110 §15.4.4: a 303 is followed with GET (the answer is elsewhere, e.g. a
                    # cancel's 303 to the job); §15.4.2-3: a 301/302 to a POST may be too, as every
                    # user agent does. Re-sending the body there would ask the Location to do the work again.
                    self.note(f"{resp.status_code}: followed with GET, without the body")
                    method, content = "GET", None
                    hdrs = {k: v for k, v in hdrs.items() if k.lower() not in ("content-type", "content-length")}
                continue
            if resp.status_code in (429, 503) and "retry-after" in resp.headers and attempt < retries:
                wait = retry_after_seconds(resp.headers["retry-after"])
                if wait is None:
                    return resp
                wait = min(wait, float(self.profile.target.get("max_retry_wait", 10)))
                self.note(f"{resp.status_code} with Retry-After: waited {wait:.1f}s before retrying")
                time.sleep(wait)
                continue
            return resp
        return resp

    def note(self, text: str) -> None:
        """Add `text` to the note of the last exchange of this check (what the kit did and why)."""
        with self._lock:
            if self.evidence:
                self.evidence[-1].note = ((self.evidence[-1].note or "") + " " + text).strip()

    def _send(self, method, url, headers, content, params, timeout, note) -> httpx.Response:
        s = self.session
        s.pacer.wait()
        body_bytes = content if isinstance(content, (bytes, bytearray)) else None
        req = s.client.build_request(method, with_query(url, params), headers=headers, content=content,
                                     timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        # raw keeps the header names as sent (httpx lower-cases them elsewhere)
        sent_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.raw]
        ex = self._exchange(method, str(req.url), sent_headers, body_bytes,
                            None if body_bytes is not None or content is None else "<streamed body>", note)
        red = s.redactor
        s.watch.refuse(req)  # the target stopped answering earlier: nothing more is sent
        start = time.perf_counter()
        try:
            resp = s.client.send(req, stream=True)
            try:
                read_bounded(resp, s.max_response_bytes, s.timeout)
            except AnswerTooLong:
                ex.status = resp.status_code  # what did come is evidence too
                ex.response_headers = red.header_map(resp.headers.items())
                raise
            finally:
                resp.close()
        except httpx.HTTPError as exc:
            ex.elapsed_ms = round((time.perf_counter() - start) * 1000, 3)  # µs: PERF-01 times single requests with it
            ex.error = f"{type(exc).__name__}: {red.text(str(exc)) or 'no detail'}"
            with self._lock:
                self.evidence.append(ex)
            s.watch.failed(ex, exc, s.client, min(s.timeout, 5.0))
            raise
        ex.elapsed_ms = round((time.perf_counter() - start) * 1000, 3)  # µs: PERF-01 times single requests with it
        ex.status = resp.status_code
        ex.response_headers = red.header_map(resp.headers.items())
        ex.response_body = red.text(_body_text(resp.content))
        with self._lock:
            self.evidence.append(ex)
        s.watch.answered(ex)
        return resp

    def call(self, name: str, *, json_body: Any = None, headers: dict[str, str] | None = None,
             path_params: dict[str, Any] | None = None, content: bytes | None = None,
             timeout: float | None = None, note: str | None = None) -> httpx.Response:
        """Call a declared endpoint: its method, path template, fixed query, headers and body members."""
        ep = self.endpoint(name)
        hdrs = dict(ep.get("headers") or {})
        hdrs.update(headers or {})
        json_body = self._with_body_members(ep, json_body)
        return self.request(
            ep.get("method", "POST"),
            self.url_for(name, **(path_params or {})),
            json_body=json_body,
            content=content,
            headers=hdrs,
            params=ep.get("query") or None,
            timeout=timeout,
            note=note,
        )

    @staticmethod
    def _with_body_members(ep: dict[str, Any], json_body: Any) -> Any:
        """`json_body` with the endpoint's fixed body members (the body's own members win)."""
        if isinstance(json_body, dict) and ep.get("body"):
            merged = copy.deepcopy(ep["body"])
            merged.update(json_body)
            return merged
        return json_body

    def batch_body(self, items: list[Any], *, extra: dict[str, Any] | None = None,
                   endpoint: str = "batch") -> bytes:
        """The exact bytes `batch(items)` sends, encoded once: `batch(..., body=...)` then sends them
        as often as needed (IDEM-03's duplicates leave together, none waiting on its own encoding)."""
        return _encode(self._with_body_members(self.endpoint(endpoint), self.envelope.body(items, extra)))

    def batch(self, items: list[Any], *, headers: dict[str, str] | None = None,
              extra: dict[str, Any] | None = None, endpoint: str = "batch", note: str | None = None,
              timeout: float | None = None, auto_key: bool = True, body: bytes | None = None) -> httpx.Response:
        """A batch of `items` to `endpoint` (a fresh key where the target requires one); `body`, from
        `batch_body`, is sent instead of encoding `items` again."""
        headers = self._with_required_key(headers) if auto_key else dict(headers or {})
        if body is not None:
            return self.call(endpoint, content=_Encoded(body), headers=headers, note=note, timeout=timeout)
        return self.call(endpoint, json_body=self.envelope.body(items, extra), headers=headers,
                         note=note, timeout=timeout)

    def _with_required_key(self, headers: dict[str, str] | None) -> dict[str, str]:
        """`headers`, plus a fresh key when the target requires one (idempotency.required) and they name none."""
        headers = dict(headers or {})
        key_header = self.profile.get("idempotency.header")
        if (self.profile.get("idempotency.required") and key_header
                and not any(k.lower() == key_header.lower() for k in headers)):
            import uuid

            headers[key_header] = f"bs-{uuid.uuid4()}"
        return headers

    def _exchange(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes | None,
                  body_text: str | None, note: str | None) -> Exchange:
        """The redacted evidence of one request, the same for httpx and raw exchanges."""
        red = self.session.redactor
        return Exchange(
            method=method,
            url=red.text(url) or "",
            request_headers=red.header_map(headers),
            request_body=red.text(_body_text(body)) if body is not None else body_text,
            curl=red.text(curl_command(method, url, dict(headers), bytes(body) if body is not None else None,
                                       red.headers, getattr(self.session, "body_sink", None))) or "",
            note=note,
        )

    def raw(self, name: str = "batch", *, content: bytes | None = None, json_body: Any = None,
            chunks: Iterable[bytes] | None = None, headers: dict[str, str] | None = None,
            path_params: dict[str, Any] | None = None, framing: str = "content-length",
            declared_length: int | None = None, send_bytes: int | None = None, half_close: bool = False,
            read_answer: bool = True, timeout: float | None = None, note: str | None = None,
            body_text: str | None = None) -> RawOutcome:
        """Call a declared endpoint over the raw HTTP/1.1 layer (h11 on a socket): what httpx cannot send.

        The URL (base path, path template, the endpoint's fixed `query`), the headers (credentials,
        the endpoint's headers, Content-Type, then `headers`), the body members of the endpoint and
        the TLS setting (`tls_verify`) are those of `call`. Then: `framing="chunked"` streams `chunks`
        and stops sending once the target answers; `declared_length` larger than the body is a lying
        Content-Length; `send_bytes` sends only that many body bytes (a cut body; `half_close` then
        shuts the write side); `read_answer=False` drops the connection right after sending.
        The exchange is kept as evidence like every other one.
        """
        if self.in_process:
            import pytest

            pytest.skip("a raw exchange needs a real socket (the run is in-process)")
        method, url, hdrs, content = self._raw_parts(name, content=content, json_body=json_body,
                                                     streamed=chunks is not None, headers=headers,
                                                     path_params=path_params)
        if chunks is None:
            body = content or b""
            if send_bytes is not None:
                body = body[:send_bytes]
            stream: Iterable[bytes] = [body]
        else:
            stream = chunks
        shown = [*hdrs.items(), ("Transfer-Encoding", "chunked") if framing == "chunked"
                 else ("Content-Length", str(declared_length if declared_length is not None else len(content or b"")))]
        ex = self._exchange(method, str(url), shown, content if chunks is None else None,
                            body_text if chunks is not None else None, note)
        self.session.watch.refuse()
        self.session.pacer.wait()
        wait = float(timeout if timeout is not None else self.session.timeout)
        try:
            sock = _rawhttp.connect(url.scheme, url.host, url.port, timeout=wait, verify=self.session.verify)
        except (OSError, ssl.SSLError) as exc:
            out = RawOutcome(error=f"cannot connect: {type(exc).__name__}: {exc}", closed=True)
        else:
            out = _rawhttp.exchange(sock, method, url.raw_path.decode("ascii"), _host(url), list(hdrs.items()),
                                    stream, framing=framing, declared_length=declared_length,
                                    half_close=half_close, read_answer=read_answer, timeout=wait,
                                    max_body=self.session.max_response_bytes)
        red = self.session.redactor
        self._answered_raw(ex, out)
        if chunks is not None and body_text:
            ex.request_body = red.text(f"{body_text}; {out.bytes_sent} bytes sent when the sending stopped")
        with self._lock:
            self.evidence.append(ex)
        if out.status is not None:
            self.session.watch.answered(ex)
        elif read_answer and not (out.error or "").startswith("cannot connect"):
            self.session.watch.dropped(ex, "no answer on a raw exchange" if out.hung else "closed without an answer")
        if out.too_long:  # as on the httpx path: the check cannot judge an answer it did not read
            raise AnswerTooLong(out.error or "the answer's body passed target.max_response_bytes")
        return out

    def _raw_parts(self, name: str, *, content: bytes | None = None, json_body: Any = None, streamed: bool = False,
                   headers: dict[str, str] | None = None,
                   path_params: dict[str, Any] | None = None) -> tuple[str, httpx.URL, dict[str, str], bytes | None]:
        """(method, URL, headers, body) of a raw request to a declared endpoint, built as `call` builds
        them: the path template and the endpoint's fixed query; credentials, the endpoint's headers,
        Content-Type (when there is a body), then `headers`; `json_body` merged into the endpoint's
        fixed body members."""
        ep = self.endpoint(name)
        method = ep.get("method", "POST")
        if json_body is not None:
            if isinstance(json_body, dict) and ep.get("body"):
                merged = copy.deepcopy(ep["body"])
                merged.update(json_body)
                json_body = merged
            content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        hdrs = {**self.auth_headers(), **(ep.get("headers") or {})}
        if content is not None or streamed:
            hdrs.setdefault("Content-Type", self.envelope.content_type)
        hdrs.update(headers or {})
        url = self.session.client.build_request(method, with_query(self.url_for(name, **(path_params or {})),
                                                                   ep.get("query"))).url
        return method, url, hdrs, content

    def _answered_raw(self, ex: Exchange, out: RawOutcome) -> None:
        """What came back on a raw exchange, onto its evidence (redacted), stamped when it ended, as
        on the httpx path (the HAR's start time is that minus the elapsed time)."""
        red = self.session.redactor
        ex.status = out.status
        ex.response_headers = red.header_map(out.headers.items())
        ex.response_body = red.text(_body_text(out.body))
        ex.elapsed_ms = round(out.elapsed_s * 1000, 3)
        ex.error = red.text(out.error) if out.error else ("closed without an answer" if out.closed else None)
        ex.recorded_at = time.time()

    def answers_beside_a_stalled_body(self, items: list[Any], wait: float = 1.0) -> bool:
        """Whether the target answers another request while one request to the batch endpoint waits
        for its body. The kit sends the head of a batch of `items` and holds its body back, gives a
        GET of the base URL on a new connection `wait` seconds to be answered (any status; headers
        are enough), then sends the body and reads the batch's answer: a slow client, never a cut
        body (a target that mishandles clients that vanish mid-body is ROB-02's and ROB-03's to
        judge, not the preflight's to break). False on a target that serves one request at a time:
        a check that holds a body that never comes (ROB-02's lying length) would stall every check
        beside it for the target's body timeout, or for ever, so it runs alone there. Both
        exchanges are kept as evidence."""
        if self.in_process:
            return False
        method, url, hdrs, content = self._raw_parts("batch", json_body=self.envelope.body(items, None),
                                                     headers=self._with_required_key(None))
        content = content or b""
        base = self.session.client.build_request("GET", self.base_url).url
        held = self._exchange(method, str(url), [*hdrs.items(), ("Content-Length", str(len(content)))], content, None,
                              f"preflight: a valid batch whose body is held back while another request is sent "
                              f"(answered within {wait:g}s?), then sent")
        probe = self._exchange("GET", str(base), [*self.auth_headers().items()], None, None,
                               "preflight: sent on a new connection while the request before waits for its body")
        self.session.pacer.wait()
        began = time.monotonic()
        try:
            sock = _rawhttp.connect(url.scheme, url.host, url.port, timeout=wait, verify=self.session.verify)
            conn = _rawhttp.send_head(sock, method, url.raw_path.decode("ascii"), _host(url), list(hdrs.items()),
                                      declared_length=len(content), timeout=wait)
        except (OSError, ssl.SSLError) as exc:
            self._answered_raw(held, RawOutcome(error=f"cannot connect: {type(exc).__name__}: {exc}", closed=True))
            with self._lock:
                self.evidence.append(held)
            return False
        self.session.pacer.wait()
        try:
            other = _rawhttp.connect(base.scheme, base.host, base.port, timeout=wait, verify=self.session.verify)
        except (OSError, ssl.SSLError) as exc:
            seen = RawOutcome(error=f"cannot connect: {type(exc).__name__}: {exc}", closed=True)
        else:
            seen = _rawhttp.exchange(other, "GET", base.raw_path.decode("ascii"), _host(base),
                                     list(self.auth_headers().items()), [], timeout=wait, max_body=64 * 1024)
        self._answered_raw(probe, seen)
        self._answered_raw(held, _rawhttp.send_body(sock, conn, content, timeout=float(self.session.timeout),
                                                    max_body=self.session.max_response_bytes))
        held.elapsed_ms = round((time.monotonic() - began) * 1000, 3)  # head, the held time and the answer
        with self._lock:
            self.evidence.extend([held, probe])
        return seen.status is not None

    def atomic(self, items: list[Any], **kw: Any) -> httpx.Response:
        return self.batch(items, endpoint="atomic", **kw)

    def single(self, item: dict[str, Any], **kw: Any) -> httpx.Response:
        """Send one item to the single endpoint: the item, or the part of it at endpoints.single.item
        (DynamoDB PutItem takes {"Item": ...}, the /PutRequest of a BatchWriteItem item), merged into
        the endpoint's fixed body members."""
        part = self.endpoint("single").get("item")
        if part:
            from ._envelope import pointer_get

            item = copy.deepcopy(pointer_get(item, part, {}))
        return self.call("single", json_body=item, **kw)

    def read(self, item_id: Any, *, note: str | None = None, timeout: float | None = None) -> httpx.Response:
        """Read one item back through endpoints.read, a template: {id} in its path (URL-encoded), in
        any string of its body, in a header or a query value (DynamoDB GetItem: POST / with
        X-Amz-Target and {"Key": {"pk": {"S": "{id}"}}})."""
        return self.for_item("read", item_id, default_method="GET", note=note, timeout=timeout)

    def for_item(self, name: str, item_id: Any, *, default_method: str = "POST", note: str | None = None,
                 timeout: float | None = None) -> httpx.Response:
        """Call an endpoint that is a template for one item (read, delete): {id} in its path
        (URL-encoded), in any string of its body, in a header or a query value."""
        ep = self.endpoint(name)
        headers = {k: str(_fill(v, item_id)) for k, v in (ep.get("headers") or {}).items()}
        query = {k: _fill(v, item_id) for k, v in (ep.get("query") or {}).items()} or None
        body = _fill(copy.deepcopy(ep["body"]), item_id) if ep.get("body") is not None else None
        return self.request(ep.get("method", default_method), self.url_for(name, id=item_id), json_body=body,
                            headers=headers, params=query, timeout=timeout, note=note)

    def _read_back(self, item_id: Any) -> tuple[bool, Any]:
        """(found, the resource): a not-found status (endpoints.read.not_found, default 404/410), or a
        2xx whose resource (at endpoints.read.resource) is absent, null or empty, is not found."""
        ep = self.endpoint("read")
        resp = self.read(item_id, note="read back")
        if resp.status_code in (ep.get("not_found") or (404, 410)):
            return False, None
        if not 200 <= resp.status_code < 300:
            raise SetupError(f"read endpoint answered {resp.status_code} for {item_id!r}")
        pointer = ep.get("resource")
        try:
            doc = loads_json(resp.content) if resp.content or pointer else None
        except (ValueError, RecursionError):
            if pointer:
                raise SetupError("read endpoint did not answer JSON") from None
            return True, _NOT_JSON
        if not pointer:
            return True, doc
        from ._envelope import pointer_get

        found = pointer_get(doc, pointer, None)
        if found is None or found in ({}, [], ""):
            return False, None
        return True, found

    def exists(self, item_id: Any) -> bool:
        """Whether the read endpoint shows the item."""
        return self._read_back(item_id)[0]

    def read_json(self, item_id: Any) -> Any:
        """The item as the read endpoint shows it (the resource at endpoints.read.resource), None when not found."""
        found, doc = self._read_back(item_id)
        if doc is _NOT_JSON:
            raise SetupError("read endpoint did not answer JSON")
        return doc if found else None

    def resource_of(self, name: str, resp: httpx.Response) -> Any:
        """The resource in an endpoint's JSON answer, at endpoints.<name>.resource (default: the whole
        answer); None when the answer is not JSON or has nothing there."""
        from ._envelope import json_of, pointer_get

        return pointer_get(json_of(resp), (self.profile.get(f"endpoints.{name}") or {}).get("resource") or "", None)


_NOT_JSON = object()


def _fill(template: Any, item_id: Any) -> Any:
    """`template` with the item id in place of every "{id}": a string that is exactly "{id}" becomes
    the id itself, {id} inside a longer string (or a member name) is replaced by its text."""
    if isinstance(template, str):
        return item_id if template == "{id}" else template.replace("{id}", str(item_id))
    if isinstance(template, dict):
        return {_fill(k, item_id) if isinstance(k, str) else k: _fill(v, item_id) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, item_id) for v in template]
    return template


def _redirect_as_get(status: int, method: str) -> bool:
    """Whether a redirect is followed with GET (what httpx and browsers do): a 303 for any method but
    HEAD, a 301 or 302 to a POST. A 307 or 308 keeps the method and the body."""
    return (status == 303 and method.upper() != "HEAD") or (status in (301, 302) and method.upper() == "POST")


_DELAY_SECONDS = re.compile(r"[0-9]+")


def retry_after_seconds(value: str) -> float | None:
    """Seconds a Retry-After value asks for, or None when it is not a valid one. RFC 9110 §10.2.3:
    delay-seconds is `1*DIGIT` (so `0.5`, `-1`, `1e3`, `inf` are invalid), or an HTTP-date."""
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(int(value))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT (RFC 9110 §5.6.7)
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())
