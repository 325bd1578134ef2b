"""A target that stops answering in the middle of a run (issue 13).

A request the target accepted and then dropped (the connection closed without an answer, or no
answer at all), after which the target answers nothing, not even a plain GET of its base URL asked
twice a second apart, took the target down: that request is a finding of the check that sent it. From then on no request is
sent (every later one raises TargetDown at once instead of waiting for a timeout), the checks not
yet run are ERROR "target stopped answering after <request>", and the run says so once.

A connection refused (never accepted) blames no request: the target went away after the last one
it answered, which is named instead, unless a request it dropped came after that one.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from ._model import Exchange

__all__ = ["TargetDown", "Watch", "describe", "judge"]

# Errors raised before the request reached the target: the target cannot have died of it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class TargetDown(httpx.TransportError):
    """The target stopped answering earlier in this run: the request was not sent."""


def describe(ex: Exchange) -> str:
    """`POST /batch (ROB-02 hostile case deep_nesting; body 40012 bytes: {"operations": [[[[...)`."""
    from urllib.parse import urlsplit

    parts = urlsplit(ex.url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    what = []
    if ex.note:
        what.append(ex.note)
    body = ex.request_body
    if body:
        size = next((v for k, v in ex.request_headers.items() if k.lower() == "content-length"), None)
        head = " ".join(body[:60].split())
        what.append(f"body of {size + ' bytes' if size else f'{len(body)} chars'}, starting {head}"
                    + ("..." if len(body) > 60 else ""))
    return f"{ex.method} {path}" + (f" ({'; '.join(what)})" if what else "")


class Watch:
    """What a session knows about the target's liveness: the last answer, the last dropped request,
    and once the target is found down, why (`down`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self.last_answered: tuple[int, Exchange] | None = None
        self.last_dropped: tuple[int, Exchange, str] | None = None
        self.down: dict[str, Any] | None = None
        self.killer: Exchange | None = None  # the exchange that took the target down, if one did

    def answered(self, ex: Exchange) -> None:
        with self._lock:
            self._seq += 1
            self.last_answered = (self._seq, ex)

    def dropped(self, ex: Exchange, error: str) -> None:
        """A raw exchange got no answer. Many targets close a lying or cut body on purpose, so this
        sends no probe; if the target turns out to be down later, with no answer since, it is blamed."""
        with self._lock:
            self._seq += 1
            self.last_dropped = (self._seq, ex, error)

    def refuse(self, request: httpx.Request | None = None) -> None:
        """Raise TargetDown when the target is already known to be down (nothing is sent)."""
        if self.down is not None:
            raise TargetDown(self.down["message"], request=request)

    def failed(self, ex: Exchange, exc: Exception, client: httpx.Client, probe_timeout: float) -> None:
        """A request got no answer (`exc`): find out whether the target still answers anything."""
        if isinstance(exc, TargetDown) or not isinstance(exc, httpx.TransportError):
            return
        with self._lock:
            self._seq += 1
            seq = self._seq
            if not isinstance(exc, _NOT_SENT):
                self.last_dropped = (seq, ex, type(exc).__name__)
            if self.down is not None or self.last_answered is None:
                return  # already known; or never answered at all: the preflight's unreachable target
        if _alive(client, probe_timeout):
            return
        with self._lock:
            if self.down is not None:
                return
            answered = self.last_answered
            dropped = self.last_dropped
            if dropped is not None and (answered is None or dropped[0] > answered[0]):
                killer, error = dropped[1], dropped[2]
                after = describe(killer)
                hung = "Timeout" in error or error.startswith("no answer")
                how = "got no answer within the timeout" if hung else "got no answer (the connection was closed)"
                finding = (f"the target stopped answering after this check's request {after}: it {how} "
                           f"({error}), and the target answered nothing after it; a request must never take "
                           "the target down")
            else:
                killer, error = None, type(exc).__name__
                after = describe(answered[1]) if answered else "the preflight"
                finding = ""
            self.killer = killer
            self.down = {"after": after, "error": error, "finding": finding, "check": None, "rule": None,
                         "at": time.time(),
                         "message": f"target stopped answering after {after}"}


def judge(out: Any, watch: Watch, exc: BaseException | None = None, live: bool = True) -> None:
    """Settle one check's outcome against a target that stopped answering: the check whose request
    took it down FAILs, naming that request, whatever else it found (its own violations stay in the
    reason); a check that ERRORed for want of answers gets the run's one reason. Findings made
    before stand. Called as each outcome is made (`live`, with the check's exception) and once more
    for every outcome when the report is built, to blame only (a raw exchange is blamed when a later
    request finds the target down, after its check has ended)."""
    from ._model import Verdict

    down = watch.down
    if down is None:
        return
    killer = watch.killer
    if killer is not None and down["check"] in (None, out.nodeid) and any(e is killer for e in out.evidence):
        if down["check"] == out.nodeid and down["finding"] in out.reason:
            return
        down["check"], down["rule"] = out.nodeid, out.rule_id
        if out.verdict == Verdict.FAIL:
            out.reason = f"{out.reason}; {down['finding']}" if out.reason else down["finding"]
        else:
            out.verdict, out.reason, out.expected, out.seen = Verdict.FAIL, down["finding"], None, None
        return
    if live and out.verdict == Verdict.ERROR and out.nodeid != down["check"] and isinstance(exc, httpx.TransportError):
        out.reason = down["message"]


def _alive(client: httpx.Client, timeout: float) -> bool:
    """Any HTTP answer to a GET of the base URL (even a 404) means the target still answers. Asked
    a moment after the failure (a process on its way out may still take one more connection), and
    once more a second later before the run gives up on the target: a loaded target that misses one
    answer, or a server restarted by its supervisor, is not a dead one. A target that drops every
    malformed request on purpose answers the first probe, so fuzzing is slowed down little."""
    for wait in (0.05, 1.0):
        time.sleep(wait)
        try:
            # Headers are enough: the body is not read (a broken target's may never end).
            with client.stream("GET", "", timeout=timeout):
                pass
        except httpx.HTTPError:
            continue
        return True
    return False
