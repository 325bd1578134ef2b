"""The one engine: a run is a pytest session over `conformance.suites` with the plugin active."""
from __future__ import annotations

import ast
import datetime as _dt
import importlib.metadata
import importlib.resources
import io
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from . import _catalogue
from ._client import Session
from ._model import CheckOutcome, RuleResult, RunReport, Verdict, worst
from ._profile import Profile

REPORT_SCHEMA_VERSION = "1.2"
# Where a pytest session keeps its RunContext. It lives here, not in the plugin, so the engine never
# imports the plugin (the plugin imports the engine; pytest loads the plugin by name, `-p`).
CTX: pytest.StashKey["RunContext"] = pytest.StashKey()


def tool_version() -> str:
    try:
        return importlib.metadata.version("batchspec")
    except importlib.metadata.PackageNotFoundError:
        return "0+checkout"


class BodyFiles:
    """Writes the request bodies too large to inline in a curl line under `<report dir>/bodies/`.

    Written when sent (nothing large is kept in memory), redacted like every other evidence, and
    pruned after the reports are written to the ones some report's curl line names."""

    def __init__(self, report_dir: str | Path, redactor: Any):
        self.dir = Path(report_dir)
        self.redactor = redactor
        self._lock = threading.Lock()

    def __call__(self, name: str, body: bytes) -> None:
        path = self.dir / name
        with self._lock:
            if path.exists():
                return
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                data = body  # hostile bytes are replayed as sent; secrets are text
            else:
                red = self.redactor.text(text)
                data = body if red == text else (red or "").encode("utf-8")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError:
                pass  # a replay file is a help; it never fails a check

    @staticmethod
    def prune(report_dir: str | Path) -> None:
        d = Path(report_dir) / "bodies"
        if not d.is_dir():
            return
        import re

        named: set[str] = set()
        for f in Path(report_dir).iterdir():
            if f.is_file() and f.suffix in (".json", ".md", ".html", ".xml", ".har"):  # .har: its _curl lines
                text = f.read_text(encoding="utf-8", errors="replace")
                named.update(re.findall(r"bodies/([0-9a-f]{20}\.body)", text))
        for p in d.iterdir():
            if p.name not in named:
                p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()  # only if nothing is left


@dataclass
class RunContext:
    """Everything one run needs and produces; shared by the CLI, plain pytest and the kit's tests."""

    profile: Profile
    transport: httpx.BaseTransport | None = None
    strict: bool = False
    classes: list[str] | None = None
    rules: list[str] | None = None
    report_dir: str | None = None
    waivers: list[dict[str, Any]] | None = None
    waivers_source: str | None = None
    # progress(outcome, done, total): called as each check finishes; status(text): live ticks (_live).
    progress: Callable[[CheckOutcome, int, int], None] | None = None
    status: Callable[[str], None] | None = None
    maxfail: int = 0  # stop after this many FAIL verdicts (--exitfirst is 1); 0 runs everything
    # Checks marked `concurrent` run in this many sessions at once (see run_concurrently); 0 or 1: one
    # check at a time. Plain pytest runs keep 0; conformance.run() and the CLI default to DEFAULT_CONCURRENCY.
    concurrency: int = 0
    evidence: str = "summary"  # "all": report.json keeps the exchanges of passing checks too
    baseline: str | None = None  # an earlier report.json that report.html compares with
    run_id: str = ""
    outcomes: list[CheckOutcome] = field(default_factory=list)
    checked_rules: set[str] = field(default_factory=set)
    preflight: dict[str, Any] = field(default_factory=dict)
    report: RunReport | None = None
    started_at: str = ""
    t0: float = 0.0
    planned: dict[str, int] = field(default_factory=dict)  # rule id -> checks selected to run
    total_checks: int = 0
    failures: int = 0
    interrupted: str | None = None  # "SIGINT" / "SIGTERM"
    stopped: str | None = None  # why --exitfirst/--maxfail stopped the run
    _session: Session | None = None
    # Outcomes arrive from several threads when checks run concurrently: one lock orders recording,
    # counting and progress; `frozen` (set when the run is interrupted) drops what arrives after.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    frozen: bool = False
    # A child process the CLI started for the check marked `concurrent(process=True)` (_child); None
    # for every other caller: a library or a pytest host never gets a child process.
    spare: Any = field(default=None, repr=False)
    # Called once when the last check has ended, before the reports are built: the CLI begins
    # stopping its embedded server there, so that its shutdown overlaps the rendering of the reports.
    checks_done: Callable[[], None] | None = field(default=None, repr=False)
    # Called once when the preflight has passed, before the first check: the CLI freezes what the
    # start allocated out of the garbage collector's reach there (freeze_startup).
    checks_start: Callable[[], None] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # how the run went, for the report's notes

    def __post_init__(self) -> None:
        from .checks import new_run_id

        self.run_id = self.run_id or new_run_id()
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.t0 = time.monotonic()
        if self.classes:
            self.classes = [c.upper() for c in self.classes]
        if self.rules:
            self.rules = [r.upper() for r in self.rules]

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.profile, self.transport)
            if self.report_dir:
                self._session.body_sink = BodyFiles(self.report_dir, self._session.redactor)
        return self._session

    def close(self) -> None:
        if self.spare is not None:
            self.spare.close()
        if self._session is not None:
            self._session.close()

    def record(self, out: CheckOutcome) -> str | None:
        """A check's outcome into the run, from whichever thread (or child process) ran it; returns why
        the run stops now (--exitfirst/--maxfail), or None."""
        with self.lock:
            if self.frozen:
                return None  # the run was interrupted: its reports say what had finished by then
            self.outcomes.append(out)
            if self.progress:
                self.progress(out, len(self.outcomes), self.total_checks)
            if out.verdict == Verdict.FAIL:
                self.failures += 1
                if self.maxfail and self.failures >= self.maxfail and not self.stopped:
                    self.stopped = ("stopped at the first FAIL (--exitfirst)" if self.maxfail == 1
                                    else f"stopped after {self.failures} FAILs (--maxfail {self.maxfail})")
                    return self.stopped
            return None

    # -- selection ----------------------------------------------------------
    def declared(self, rule: _catalogue.Rule) -> bool:
        return rule.cls in self.profile.classes

    def selected(self, rule: _catalogue.Rule) -> bool:
        if self.rules and rule.id not in self.rules:
            return False
        if self.classes and rule.cls not in self.classes:
            return False
        return True

    def halted(self) -> str | None:
        """Why the run ended before its last check ("interrupted after 3 of 68 checks"), or None."""
        done = len(self.outcomes)
        if self.interrupted:
            return f"interrupted after {done} of {self.total_checks} checks"
        if self.stopped:
            return f"{self.stopped} after {done} of {self.total_checks} checks"
        return None

    # -- aggregation --------------------------------------------------------
    def build_report(self) -> RunReport:
        cat = _catalogue.load()
        if self._session is not None and self.session.watch.down:
            from ._down import judge

            for o in self.outcomes:  # a request blamed after its check ended (a raw exchange)
                judge(o, self.session.watch, live=False)
        by_rule: dict[str, list[CheckOutcome]] = {}
        for o in self.outcomes:
            by_rule.setdefault(o.rule_id, []).append(o)
        results = []
        pre_ok = self.preflight.get("ok", True)
        for rule in cat.rules:
            outs = by_rule.get(rule.id, [])
            if not self.declared(rule):
                verdict, reason = Verdict.SKIP, f"class {rule.cls} not declared by the profile"
            elif not self.selected(rule):
                verdict, reason = Verdict.SKIP, "not selected (--class/--rule)"
            elif rule.pending or rule.id not in self.checked_rules:
                verdict, reason = Verdict.PENDING, "no check for this rule yet"
            elif not pre_ok:
                verdict, reason = Verdict.ERROR, "preflight failed: " + self.preflight.get("reason", "")
            elif not outs and self.halted():
                verdict, reason = Verdict.SKIP, f"not run: {self.halted()}"
            elif not outs:
                verdict, reason = Verdict.ERROR, "its checks did not run"
            else:
                verdict = worst([o.verdict for o in outs])
                deciding = [o for o in outs if o.verdict == verdict]
                reason = "; ".join(dict.fromkeys(o.reason for o in deciding if o.reason))
                if verdict == Verdict.PASS and not reason:
                    reason = f"{len(outs)} check(s) passed"
                if self.halted() and len(outs) < self.planned.get(rule.id, 0):
                    reason += f" (only {len(outs)} of {self.planned[rule.id]} checks ran: {self.halted()})"
            result = RuleResult(
                id=rule.id, cls=rule.cls, level=rule.level, title=rule.title,
                rationale=rule.rationale, seed=rule.seed, verdict=verdict, reason=reason,
                checks=sorted(outs, key=lambda o: o.nodeid),
            )
            # PASS outranks SKIP in `worst`: a skipped check or an unobserved state must not vanish (issue 14).
            if verdict == Verdict.PASS and result.partial:
                done = f"{len(outs)} check(s) passed"
                result.reason = result.qualifier() + ("" if reason == done else f"; {reason}")
            results.append(result)
        finished = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        target = self.profile.base_url
        report = RunReport(
            schema_version=REPORT_SCHEMA_VERSION,
            tool_version=tool_version(),
            target=self.session.redactor.text(target) or target,
            profile=self.profile.source,
            started_at=self.started_at,
            finished_at=finished,
            duration_s=round(time.monotonic() - self.t0, 3),
            strict=self.strict,
            classes_declared=self.profile.classes,
            rules=results,
            preflight=self.preflight,
            settings={
                "run_id": self.run_id,
                "verify_tls": bool(self.profile.target.get("verify_tls", True)),
                "timeout_s": self.profile.target.get("timeout"),
                "pace_rps": self.profile.target.get("pace"),
                "selected_classes": self.classes or [],
                "selected_rules": self.rules or [],
                "in_process": self.transport is not None,
                "evidence": self.evidence,
                **({"baseline": self.baseline} if self.baseline else {}),
            },
        )
        report.notes.extend(self.notes)
        if self.interrupted:
            report.interrupted = {"signal": self.interrupted, "checks_run": len(self.outcomes),
                                  "checks_total": self.total_checks, "message": self.halted()}
        elif self.stopped:
            report.notes.append(f"The run {self.halted()}; the rules not reached are SKIP.")
        report.target_stopped = self._target_stopped()
        if not report.settings["verify_tls"]:
            report.notes.append("TLS verification was turned OFF by the profile.")
        if self.waivers is not None:
            from . import _waivers

            _waivers.apply(report, self.waivers, source=self.waivers_source)
        from . import _levels

        report.catalogue = {"version": cat.version}
        facts = {"correlation": self.session.envelope.m.get("correlation") or "id",
                 "item_ids": "absent" if self.session.envelope.id_field is None else "present",
                 "results": "failures_only" if self.session.envelope.failures_only else "all"}
        report.conformance = _levels.assess(cat, report.rules, report.classes_declared, facts)
        return report


    def _target_stopped(self) -> dict[str, Any] | None:
        """The one statement of a run whose target stopped answering (conformance._down)."""
        down = self.session.watch.down if self._session is not None else None
        if down is None:
            return None
        not_run = sum(1 for o in self.outcomes if o.verdict == Verdict.ERROR and o.reason == down["message"])
        if down.get("rule"):
            blame = f"; {down['rule']} FAILs for that request ({down['check']})"
        elif down.get("finding"):
            blame = "; no check sent that request (the preflight, a setup or a cleanup request)"
        else:
            blame = "; no request is blamed: the connection was refused after the last answer"
        return {"after": down["after"], "error": down["error"], "check": down.get("check"), "rule": down.get("rule"),
                "checks_not_run": not_run,
                "message": (f"The target stopped answering after {down['after']}{blame}; {not_run} check(s) "
                            "after it could not run and are ERROR; the verdicts found before it stand.")}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so pytest ends the session and reports are written."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class ReportDirError(OSError):
    """The report dir cannot be written (exit 2, found before the first request)."""


def check_report_dir(path: str | Path) -> None:
    """Create the report dir and prove a file can be written in it; raise ReportDirError if not."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".batchspec-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ReportDirError(f"cannot write reports to {str(d)!r}: {exc.strerror or exc}") from None


class SelectionError(ValueError):
    """A --class/--rule selection that names an unknown id or leaves no rule to run (exit 2)."""


def split_ids(values: list[str] | str | None) -> list[str] | None:
    """`--class CORE,HTTP --class IDEM` -> ["CORE", "HTTP", "IDEM"]: comma lists and repeats alike."""
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
    out = [v.strip().upper() for raw in values for v in str(raw).split(",") if v.strip()]
    return list(dict.fromkeys(out)) or None


def check_selection(profile: Profile, classes: list[str] | str | None,
                    rules: list[str] | str | None) -> tuple[list[str] | None, list[str] | None]:
    """Normalise a selection; raise SelectionError (one line) if it names unknown ids or runs nothing."""
    cat = _catalogue.load()
    classes, rules = split_ids(classes), split_ids(rules)
    for c in classes or []:
        if c not in cat.class_ids:
            raise SelectionError(f"unknown class {c!r} (known: {', '.join(cat.class_ids)})")
    for r in rules or []:
        if r not in cat:
            raise SelectionError(f"unknown rule {r!r} (see `batchspec rules`)")
    declared = set(profile.classes)
    runnable = [r for r in cat.rules if r.cls in declared and not r.pending
                and (not classes or r.cls in classes) and (not rules or r.id in rules)]
    if runnable:
        return classes, rules
    why: list[str] = []
    for c in classes or []:
        if c not in declared:
            why.append(f"class {c} is not declared by the profile")
    for rid in rules or []:
        rule = cat.get(rid)
        if classes and rule.cls not in classes:
            why.append(f"{rid} is in class {rule.cls}, not {'/'.join(classes)}")
        elif rule.cls not in declared:
            why.append(f"{rid}'s class {rule.cls} is not declared by the profile")
        elif rule.pending:
            why.append(f"{rid} has no check yet (PENDING)")
    shown = " ".join(([f"--class {','.join(classes)}"] if classes else [])
                     + ([f"--rule {','.join(rules)}"] if rules else []))
    raise SelectionError(f"the selection {shown or '(everything)'} leaves no rule to run"
                         + (f": {'; '.join(why)}" if why else ""))


class _Inject:
    """Hands a prepared RunContext to the plugin of a nested pytest session."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[CTX] = self.ctx


def pytest_args(ctx: RunContext, extra: list[str] | None = None) -> list[str]:
    ini = importlib.resources.files("conformance").joinpath("_pytest.ini")
    suites = Path(str(importlib.resources.files("conformance").joinpath("suites")))
    return [
        str(suites),
        "-c", str(ini),
        "--rootdir", str(suites),
        # Third-party plugins of the user's environment have no say in a conformance run.
        "--disable-plugin-autoload",
        "-p", "conformance.plugin",
        "-p", "no:cacheprovider",
        "-p", "no:terminal",
        "-p", "no:xdist",
        "-p", "no:randomly",
        "-p", "no:unraisableexception",  # its forced gc.collect() costs more than a whole CORE run
        # The checks judge with expect(), never a bare assert: rewriting the suites' asserts would
        # only parse and recompile every suite module on each run (~0.1-0.3 s; no bytecode cache
        # under PYTHONDONTWRITEBYTECODE or a read-only install). Worker sessions say the same.
        "--assert=plain",
        "-W", "ignore",
        "--capture=no",
        *(extra or []),
    ]


# -- checks that run concurrently -----------------------------------------------------------------
# A check marked `@pytest.mark.concurrent` neither disturbs nor depends on the others so marked: its
# verdict does not need the target otherwise idle, and its traffic (unique ids, ordinary requests)
# cannot change another check's verdict. Such checks run first, in `concurrency` pytest sessions at
# once (worker sessions in threads of this process, each with its own setup state and fixtures,
# taking checks from one queue); every other check then runs alone, in the main session, in
# collection order. Most of the gain is overlapped waiting (callback quiet windows, retention
# windows, back-offs, job polls) beside ROB-01's fuzzing. Why sessions and not threads in one
# session: pytest keeps one setup stack and one cached value per fixture per session, so two checks
# of one session cannot be set up at the same time. `@pytest.mark.concurrent(seconds=N)`: the check
# usually takes about N seconds against a fast target (waits or fuzzing); used only to order the
# queue, longest first, so the short checks fill the gaps beside the long ones. `group="..."`: checks
# of one group never run at the same time, though each runs beside the others (the ASYNC checks that
# grow jobs to the declared async limit: side by side they would add up their memory, in the kit and
# in an embedded target, and queue behind each other on the target's job worker).
DEFAULT_CONCURRENCY = 4
WORKER: pytest.StashKey["Scheduler"] = pytest.StashKey()


def is_concurrent(item: pytest.Item) -> bool:
    return item.get_closest_marker("concurrent") is not None


def holds_a_stalled_body(item: pytest.Item) -> bool:
    """`concurrent(holds_a_stalled_body=True)`: the check keeps a request open whose body never comes
    (it waits for the target's body timeout). It runs beside the others only on a target the
    preflight saw answering another request meanwhile (Target.answers_beside_a_stalled_body); on one
    that serves a request at a time it would stall them all, so there it runs alone."""
    m = item.get_closest_marker("concurrent")
    return bool(m and m.kwargs.get("holds_a_stalled_body"))


def expected_seconds(item: pytest.Item) -> float:
    m = item.get_closest_marker("concurrent")
    return float(m.kwargs.get("seconds", 0) or 0) if m else 0.0


def in_own_process(item: pytest.Item) -> bool:
    """`concurrent(process=True)`: the check is bound by its own CPU (ROB-01's case generation); where
    the run has a child process for it (the CLI's, _child.Spare), it runs there, on another core."""
    m = item.get_closest_marker("concurrent")
    return bool(m and m.kwargs.get("process"))


def group_of(item: pytest.Item) -> str | None:
    m = item.get_closest_marker("concurrent")
    return str(m.kwargs["group"]) if m and m.kwargs.get("group") else None


class Scheduler:
    """The queue of concurrent checks (node id, group) that worker sessions take from, longest
    first; a check whose group is busy waits for the check of that group in flight to be `done`."""

    def __init__(self, entries: list[tuple[str, str | None]]):
        self._entries = list(entries)
        self._cond = threading.Condition()
        self._busy: dict[str, str] = {}  # node id in flight -> its group
        self.stopped = False
        self.missed: list[str] = []  # taken by a worker that did not collect it: run in the main session
        self.started = threading.Event()  # the first check was handed out
        self._in_flight: set[str] = set()

    def next(self, accept: Callable[[str], bool] | None = None) -> str | None:
        """The next check to run (None: nothing left); `accept`: the checks the asking worker can run
        (those it collected). A worker with nothing left that it can run gets None; a check no worker
        takes stays in the queue, and `stop` returns it to the main session."""
        with self._cond:
            while not self.stopped and self._entries:
                mine = [(k, nodeid, group) for k, (nodeid, group) in enumerate(self._entries)
                        if accept is None or accept(nodeid)]
                if not mine:
                    return None
                for k, nodeid, group in mine:
                    if group is None or group not in self._busy.values():
                        del self._entries[k]
                        if group is not None:
                            self._busy[nodeid] = group
                        self._in_flight.add(nodeid)
                        self.started.set()
                        return nodeid
                self._cond.wait(0.1)
            return None

    def done(self, nodeid: str) -> None:
        with self._cond:
            self._in_flight.discard(nodeid)
            if self._busy.pop(nodeid, None) is not None:
                self._cond.notify_all()

    def only_left(self, nodeids: set[str]) -> bool:
        """Nothing is waiting to be handed out, and every check in flight is one of `nodeids`."""
        with self._cond:
            return not self._entries and self._in_flight <= nodeids

    def miss(self, nodeid: str) -> None:
        with self._cond:
            self.missed.append(nodeid)
        self.done(nodeid)

    def stop(self) -> list[str]:
        """No check is handed out any more; returns the ones never handed out."""
        with self._cond:
            self.stopped = True
            left, self._entries = [nodeid for nodeid, _ in self._entries], []
            self._cond.notify_all()
            return left


class _WorkerInject:
    def __init__(self, ctx: RunContext, scheduler: Scheduler):
        self.ctx, self.scheduler = ctx, scheduler

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[CTX] = self.ctx
        config.stash[WORKER] = self.scheduler

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> bool:
        # A worker session that dies (CPython 3.11's parser race, an interrupt mid-report) prints
        # nothing: the check it had taken goes back to the main session, which runs it alone, and
        # stderr carries the kit's own lines only.
        return True


def worker_args(files: list[str]) -> list[str]:
    """A worker session's arguments: the suite files it may be handed checks from, and none of the
    plugins that change process-wide state around each test (warnings filters, logging handlers,
    threading.excepthook, faulthandler, assertion rewriting: the main session already imported and
    rewrote the suites), which are not safe with several sessions running at once."""
    ini = importlib.resources.files("conformance").joinpath("_pytest.ini")
    suites = Path(str(importlib.resources.files("conformance").joinpath("suites")))
    return [
        *files,
        "-c", str(ini),
        "--rootdir", str(suites),
        "--disable-plugin-autoload",
        "-p", "conformance.plugin",
        *[a for name in ("cacheprovider", "terminal", "xdist", "randomly", "unraisableexception",
                         "threadexception", "warnings", "logging", "faulthandler", "stepwise")
          for a in ("-p", f"no:{name}")],
        "--assert=plain",
        "--capture=no",
    ]


# CPython 3.11 keeps the parser's recursion depth per interpreter, not per thread: two threads in
# ast.parse at once can fail with "SystemError: AST constructor recursion depth mismatch", which
# kills the pytest session it happens in (an INTERNALERROR traceback on stderr). Parsers run beside
# each other here: pytest rendering a failing check's source, hypothesis reading a lambda's source
# or a module's constants under ROB-01, the traceback module's carets. Once worker sessions have
# run, ast.parse takes one lock (microseconds to milliseconds each; nothing here parses in a hot loop).
_PARSE_LOCK = threading.RLock()


def _one_parser_at_a_time() -> None:
    """Installed once and left in place: on an interrupt the workers' checks in flight end on their
    own after the main thread has moved on, and they still parse (a lock is transparent otherwise)."""
    if getattr(ast.parse, "_batchspec_serial", False):
        return
    original = ast.parse

    def parse(*args: Any, **kwargs: Any) -> Any:
        with _PARSE_LOCK:
            return original(*args, **kwargs)

    parse._batchspec_serial = True  # type: ignore[attr-defined]
    ast.parse = parse  # type: ignore[assignment]


class Background:
    """The checks of the concurrent phase still running when it ends (`run_concurrently`).

    The phase ends when every other concurrent check is done; a check that holds a stalled body
    (`holds_a_stalled_body`: a request whose body never comes, waiting out the target's body timeout)
    may go on beside the checks that run alone, because it takes no share of the kit's process or of
    the target (it runs beside other checks only on a target the preflight saw answering meanwhile).
    The check in the kit's child process is not one: it loads the target. `join` waits for them and
    returns the node ids the main session must still run alone (never handed out, taken by a worker
    that could not collect it, handed back by a child that failed)."""

    def __init__(self, ctx: RunContext, scheduler: Scheduler, threads: list[threading.Thread],
                 handed_back: list[str]):
        self.ctx, self.scheduler, self._threads, self._handed_back = ctx, scheduler, threads, handed_back

    def join(self) -> list[str]:
        try:
            for t in self._threads:
                while t.is_alive():
                    t.join(0.1)  # short joins: SIGINT/SIGTERM reach the main thread while it waits
        except BaseException:
            self.abort()
            raise
        return self.scheduler.stop() + self.scheduler.missed + self._handed_back

    def abort(self) -> None:
        """An interrupt: no check is handed out any more, the outcomes are frozen, the child is closed."""
        self.scheduler.stop()
        with self.ctx.lock:
            self.ctx.frozen = True
        if self.ctx.spare is not None:
            self.ctx.spare.close()


def run_concurrently(ctx: RunContext, items: list[pytest.Item]) -> Background:
    """Run the concurrent checks `items` in `ctx.concurrency` worker sessions until every one is done
    but those that may go on beside the checks that run alone; the caller runs those, then joins the
    returned `Background`, which gives the checks no worker or child ran (the caller runs them alone).

    An interrupt (SIGINT, SIGTERM) while they run stops handing out checks and freezes the outcomes,
    then propagates: the main session writes the reports of what finished."""
    apart = [item for item in items if in_own_process(item)][:1] if ctx.spare is not None else []
    handed_back: list[str] = []
    children = [threading.Thread(target=_run_in_child, args=(ctx, item, handed_back), daemon=True,
                                 name="batchspec-child") for item in apart]
    for t in children:
        t.start()
    items = [item for item in items if item not in apart]
    order = sorted(range(len(items)), key=lambda k: (-expected_seconds(items[k]), k))
    scheduler = Scheduler([(items[k].nodeid, group_of(items[k])) for k in order])
    stalled = {item.nodeid for item in items if holds_a_stalled_body(item)}
    # A check holding a stalled body waits out the target's timeout using neither the kit's CPU nor
    # the target's: it gets a worker of its own, so that `concurrency` workers run the others. Each
    # worker collects only the suite files of the checks it may take (a session's collection costs
    # ~5-8 ms of CPU a file, beside a ~20 ms start-up: the stalled-body worker collects one file).
    others = [item for item in items if item.nodeid not in stalled]
    pools: list[tuple[list[str], int]] = []  # (the files a worker collects, how many such workers)
    if stalled:
        pools.append((sorted({str(item.path) for item in items if item.nodeid in stalled}), 1))
    if others:
        pools.append((list(dict.fromkeys(str(item.path) for item in others)), min(ctx.concurrency, len(others))))

    def work(files: list[str]) -> None:
        # No redirect_stdout here: it swaps sys.stdout for the whole process, and restores made in
        # another order than they were made would leave a worker's buffer in place. The caller's
        # redirect (run()) covers the workers; with `-p no:terminal` they print nothing anyway.
        try:
            pytest.main(worker_args(files), plugins=[_WorkerInject(ctx, scheduler)])
        except BaseException:  # noqa: BLE001 - what this worker did not take, another (or the main session) runs
            pass

    threads = [threading.Thread(target=work, args=(files,), name=f"batchspec-worker-{k}", daemon=True)
               for k, files in enumerate(files for files, n in pools for _ in range(n))]
    background = Background(ctx, scheduler, threads + children, handed_back)
    try:
        _one_parser_at_a_time()
        if items:
            _run_workers(threads, scheduler, stalled)
        for t in children:
            while t.is_alive():
                t.join(0.1)
    except BaseException:
        background.abort()
        raise
    release_memory()
    return background


def _run_in_child(ctx: RunContext, item: pytest.Item, handed_back: list[str]) -> None:
    """Run `item` in the run's child process and record its outcome; if the child could not run
    it, hand it back (the main session runs it alone)."""
    from ._child import job_for

    try:
        outcomes = ctx.spare.run(job_for(ctx, item), status=ctx.status)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the check is not lost: the main session runs it
        outcomes = f"the child process failed ({type(exc).__name__}: {exc})"
    if isinstance(outcomes, str):
        handed_back.append(item.nodeid)
        with ctx.lock:
            ctx.notes.append(f"{item.nodeid.split('::')[-1]} ran in the kit's own process: {outcomes}.")
        return
    for out in outcomes:
        ctx.record(out)


def _run_workers(threads: list[threading.Thread], scheduler: Scheduler, background: set[str]) -> None:
    """Start the workers; return when they are done, or when only `background` checks are in flight."""
    threads[0].start()
    # The longest check starts first, before the other workers compete with it for the
    # interpreter while they start up and collect (~0.05-0.1 s of CPU each).
    while threads[0].is_alive() and not scheduler.started.wait(0.1):
        pass
    for t in threads[1:]:
        t.start()
    for t in threads:
        while t.is_alive():
            if background and scheduler.only_left(background):
                return
            t.join(0.1)  # short joins: SIGINT/SIGTERM reach the main thread while it waits


def limit_malloc_arenas(arenas: int = 2) -> None:
    """At most `arenas` glibc malloc arenas in this process, set before any thread starts.

    glibc gives each thread that allocates while another holds an arena a new one, up to 8 per
    core; the run's threads (worker sessions, the embedded server, its thread pool, httpx) each
    grow and fragment their own, and freed memory stays spread over all of them. Measured on the
    embedded run (docs/performance.md, round 6): peak PSS 125-141 MiB with 2 arenas against 167-169
    with glibc's default, largest-process RSS 157-170 against 188-196 MiB, wall time unchanged.
    Only the CLI calls it (the process is the kit's own; a library or pytest plugin must not change
    a host process's allocator). `MALLOC_ARENA_MAX` in the environment wins. Elsewhere than glibc:
    nothing."""
    import os

    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX (malloc.h)
    except (OSError, AttributeError):
        pass


# The cyclic collector's first threshold in the kit's own process (CPython's default is 700).
GC_THRESHOLD0 = 10_000


def tune_gc(threshold0: int = GC_THRESHOLD0) -> Callable[[], None]:
    """Fewer runs of the cyclic garbage collector in the kit's own process.

    A run allocates millions of short-lived objects (parsed job pages, evidence, httpx's requests),
    nearly all freed by reference counting; at CPython's default thresholds (700, 10, 10) the
    collector still ran ~1,100 times per embedded run and took 0.30 s of the interpreter; with
    10,000 and `freeze_startup` it runs ~170 times in 0.13 s (docs/performance.md, round 12).
    Garbage in reference cycles waits at most 10,000 allocations longer. Only the CLI calls it,
    after forking its child (which keeps the defaults): a library or pytest plugin must not change
    a host process's collector.
    Returns what puts the collector back as it was, thawing what `freeze_startup` froze (the CLI
    calls it when the run is over: its `main` also runs inside other processes, the kit's tests)."""
    import gc

    before = gc.get_threshold()
    gc.set_threshold(threshold0, before[1], before[2])

    def restore() -> None:
        gc.unfreeze()
        gc.set_threshold(*before)

    return restore


def freeze_startup() -> None:
    """Move everything allocated so far (imports, the collected suites, the embedded server's app)
    out of the cyclic collector's reach: it lives until the end of the run anyway, and every full
    collection traversed it again (each ~15 ms; half of the collector's time). Called by the CLI when
    the checks start (`checks_start`); a library caller's process is left alone."""
    import gc

    gc.collect()  # what is garbage now is freed, not frozen
    gc.freeze()


def release_memory() -> None:
    """Give the memory freed by finished checks back to the system (glibc's malloc_trim).

    Big bodies (1 MB batches, job result pages) are freed but stay in the process's heap, which
    only grows: checks that ran side by side leave it at the sum of their peaks, and the checks and
    reports that follow then raise the run's peak from there. Elsewhere than glibc: nothing."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class EngineError(RuntimeError):
    pass


def run(
    profile: Profile,
    *,
    transport: httpx.BaseTransport | None = None,
    classes: list[str] | None = None,
    rules: list[str] | None = None,
    strict: bool = False,
    report_dir: str | Path | None = None,
    waivers: list[dict[str, Any]] | None = None,
    waivers_source: str | None = None,
    progress: Callable[[CheckOutcome, int, int], None] | None = None,
    status: Callable[[str], None] | None = None,
    maxfail: int = 0,
    evidence: str = "summary",
    baseline: str | None = None,
    concurrency: int | None = None,
    spare: Any = None,
    checks_done: Callable[[], None] | None = None,
    checks_start: Callable[[], None] | None = None,
) -> RunReport:
    """Run the suites against the profile's target and return the report (written if report_dir).

    `concurrency`: how many checks marked `concurrent` run at once (default DEFAULT_CONCURRENCY; 0 or
    1: every check alone). With `maxfail` every check runs alone, so the run stops exactly at the
    FAIL that ends it. `spare`: a child process (`_child.Spare`, the CLI's) for the check marked
    `concurrent(process=True)`; it is closed when the run ends, used or not. `checks_done()` is
    called once the last check has ended, before the reports are built (no request follows it);
    `checks_start()` once the preflight has passed, before the first check.

    Raises SelectionError for a selection that names an unknown class or rule or leaves nothing to run.
    """
    classes, rules = check_selection(profile, classes, rules)
    if report_dir:
        check_report_dir(report_dir)  # before the first request, not after the whole run
    ctx = RunContext(
        profile=profile, transport=transport, strict=strict, classes=classes, rules=rules,
        report_dir=str(report_dir) if report_dir else None, waivers=waivers,
        waivers_source=waivers_source, progress=progress, status=status, maxfail=maxfail,
        evidence=evidence, baseline=baseline,
        concurrency=0 if maxfail else (DEFAULT_CONCURRENCY if concurrency is None else max(0, concurrency)),
        spare=spare if transport is None else None, checks_done=checks_done, checks_start=checks_start,
    )
    if spare is not None and ctx.spare is None:
        spare.close()  # an in-process transport: the child could not reach the target
    out = io.StringIO()
    # SIGTERM ends the run like SIGINT does: the reports are written and say so (exit 143).
    main_thread = threading.current_thread() is threading.main_thread()
    prev = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        with contextlib.redirect_stdout(out):
            code = pytest.main(pytest_args(ctx), plugins=[_Inject(ctx)])
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, prev)
    if ctx.report is None:
        raise EngineError(f"the engine did not produce a report (pytest exit {int(code)}): {out.getvalue()[-2000:]}")
    return ctx.report
