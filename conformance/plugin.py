"""The pytest plugin: options, the `rule` marker, fixtures, verdicts, preflight and reports.

It is never autoloaded (no `pytest11` entry point): installing batchspec changes no other project's
pytest sessions. The engine loads it by name for a conformance run (`-p conformance.plugin`), and plain
pytest use names it too: `pytest -p conformance.plugin --pyargs conformance --target URL ...`.
It is inert unless a run context exists: one injected by `conformance.run()` (the CLI) or one
built from `--target`/`--profile`.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Iterator

import httpx
import pytest

from . import _catalogue, _live
from ._client import SetupError, Target
from ._engine import CTX, WORKER, RunContext, SelectionError, Terminated, _raise_terminated, check_selection
from ._envelope import json_of
from ._model import CheckOutcome, Exchange, Verdict
from ._setup import run_setup
from ._profile import ProfileError, bundled, load
from .checks import _CURRENT, ItemFactory, RuleViolation, observed_notes, series_of

EVIDENCE = pytest.StashKey[list]()
FIGURES = pytest.StashKey[dict]()
RECORDED = pytest.StashKey[bool]()
PLAIN = pytest.StashKey[bool]()  # a run started by plain pytest (not by conformance.run)
PREV_TERM = pytest.StashKey[Any]()


def pytest_unconfigure(config: pytest.Config) -> None:
    ctx = config.stash.get(CTX, None)
    _RUNS[:] = [c for c in _RUNS if c is not ctx]
    prev = config.stash.get(PREV_TERM, None)
    if prev is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, prev)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("batchspec", "batchspec conformance kit")
    g.addoption("--target", action="store", default=None, help="Base URL of the target (overrides the profile's).")
    g.addoption("--profile", action="store", default=None, help="Profile YAML (default: the bundled reference profile).")
    g.addoption("--batchspec-strict", dest="bs_strict", action="store_true", default=False, help="SHOULD rules that fail are FAIL, not WARN (the CLI's --strict).")
    g.addoption("--report-dir", action="store", default=None, help="Write junit.xml, report.json, report.md, report.html here.")
    g.addoption("--class", dest="bs_classes", action="append", default=None, help="Only this rule class (comma list, repeatable).")
    g.addoption("--rule", dest="bs_rules", action="append", default=None, help="Only this rule id (comma list, repeatable).")
    g.addoption("--waivers", action="store", default=None, help="YAML file of accepted deviations.")


def _context(config: pytest.Config) -> RunContext | None:
    return config.stash.get(CTX, None)


def _worker(config: pytest.Config) -> Any:
    """The scheduler of a worker session (one of the sessions running concurrent checks), or None."""
    return config.stash.get(WORKER, None)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rule(id): the catalogue rule this check verifies")
    config.addinivalue_line("markers", "level(LEVEL): the check verifies a weaker clause of its rule "
                            "(e.g. the SHOULD part of a MUST rule): a violation is judged at LEVEL")
    config.addinivalue_line("markers", "concurrent(seconds=0): the check may run at the same time as the other "
                            "concurrent checks (it neither disturbs them nor needs the target otherwise idle); "
                            "seconds: about how long it takes, to start the longest first; group: checks of one group never run at "
                            "the same time; holds_a_stalled_body: the check keeps a request open whose body never comes, and "
                            "runs beside the others only on a target seen answering meanwhile; process: the check is pure CPU and, where the "
                            "run has a child process for it (the CLI's), runs there (docs/performance.md)")
    if _context(config) is not None:
        _RUNS.append(_context(config))
        return
    url = config.getoption("--target", None)
    path = config.getoption("--profile", None)
    if not url and not path:
        return
    try:
        profile = load(path) if path else bundled()
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None
    if url:
        profile = profile.with_base_url(url)
    waivers = None
    wpath = config.getoption("--waivers", None)
    if wpath:
        from . import _waivers

        try:
            waivers = _waivers.load(wpath)
        except _waivers.WaiverError as exc:
            raise pytest.UsageError(str(exc)) from None
    try:
        classes, rules = check_selection(profile, config.getoption("bs_classes"), config.getoption("bs_rules"))
    except SelectionError as exc:
        # Exit 2 with one line, as the CLI does (pytest's own UsageError would exit 4).
        pytest.exit(f"batchspec: {exc}", returncode=2)
    if config.getoption("--report-dir"):
        from ._engine import ReportDirError, check_report_dir

        try:
            check_report_dir(config.getoption("--report-dir"))
        except ReportDirError as exc:
            pytest.exit(f"batchspec: {exc}", returncode=2)
    config.stash[PLAIN] = True
    if threading.current_thread() is threading.main_thread():
        # Reports are written on SIGTERM too (exit 143); the previous handler comes back at unconfigure.
        config.stash[PREV_TERM] = signal.signal(signal.SIGTERM, _raise_terminated)
    config.stash[CTX] = RunContext(
        profile=profile,
        strict=config.getoption("bs_strict"),
        classes=classes,
        rules=rules,
        report_dir=config.getoption("--report-dir"),
        waivers=waivers,
        waivers_source=wpath,
    )
    _RUNS.append(config.stash[CTX])


def rule_of(item: pytest.Item) -> str | None:
    m = item.get_closest_marker("rule")
    return str(m.args[0]).upper() if m and m.args else None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    ctx = _context(config)
    if ctx is None or _worker(config) is not None:
        return  # a worker session runs only what the main session's selection handed it
    cat = _catalogue.load()
    keep, drop = [], []
    for item in items:
        rid = rule_of(item)
        if rid is None or rid not in cat:
            raise pytest.UsageError(f"{item.nodeid}: a check must carry @pytest.mark.rule with a catalogue id (got {rid!r})")
        ctx.checked_rules.add(rid)
        rule = cat.get(rid)
        (keep if ctx.declared(rule) and ctx.selected(rule) and not rule.pending else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    ctx.total_checks = len(keep)
    ctx.planned = {}
    for item in keep:
        rid = rule_of(item) or ""
        ctx.planned[rid] = ctx.planned.get(rid, 0) + 1


def _preflight(ctx: RunContext) -> dict[str, Any]:
    try:
        return _preflight_exchange(ctx)
    except Exception as exc:  # noqa: BLE001 - whatever the target sent, the run ends with one clear line
        return {"ok": False, "evidence": [],
                "reason": f"the kit could not read the answer to one small valid batch: {type(exc).__name__}: {exc}"}


def _preflight_exchange(ctx: RunContext) -> dict[str, Any]:
    evidence: list[Exchange] = []
    target = Target(ctx.session, evidence)
    factory = ItemFactory(ctx.profile, ctx.run_id)
    base = ctx.profile.base_url
    info: dict[str, Any] = {"ok": False, "evidence": evidence, "created": factory.created}
    try:
        not_ready = run_setup(target)
        if not_ready:
            info["reason"] = not_ready
            return info
        sent = factory.valid(1)
        resp = target.batch(sent, note="preflight: one small valid batch")
    except httpx.ConnectError as exc:
        info.update(unreachable=True, reason=f"cannot connect to {base}: {exc or 'connection refused'}")
        return info
    except httpx.TimeoutException:
        info.update(unreachable=True, reason=f"{base} did not answer within {ctx.session.timeout:g}s")
        return info
    except (httpx.RemoteProtocolError, httpx.DecodingError) as exc:
        # Connected, but no answer the kit can read: closed without one, or not readable HTTP/1.1
        # (h11 refuses headers over 64 KiB and broken framing), or a body that does not decode.
        info.update(unreachable=True, reason=f"{base} took the connection but gave no readable HTTP answer to one "
                                            f"small valid batch: {type(exc).__name__}: {exc}")
        return info
    except httpx.HTTPError as exc:
        info.update(unreachable=True, reason=f"cannot reach {base}: {type(exc).__name__}: {exc}")
        return info
    status = resp.status_code
    if status in (401, 403):
        info["reason"] = f"the batch endpoint refused the profile's credentials ({status}); check target.headers"
    elif status == 404:
        info["reason"] = f"the batch endpoint {resp.request.url} does not exist (404); check endpoints.batch"
    elif status == 405:
        info["reason"] = f"the batch endpoint does not take {resp.request.method} (405); check endpoints.batch.method"
    elif not 200 <= status < 300:
        info["reason"] = f"one small valid batch got {status}; check endpoints.batch and items.valid"
    elif json_of(resp) is None:
        info["reason"] = ("one small valid batch got a body that is not JSON the kit can read (invalid, or nested "
                          "deeper than about 1,000 levels)")
    elif status != 202 and (missing := _no_result(ctx.session.envelope, resp, sent)):
        info["reason"] = missing
    else:
        info["ok"] = True
        info["reason"] = f"one small valid batch got {status} with JSON"
    return info


def _no_result(envelope: Any, resp: httpx.Response, sent: list[dict[str, Any]]) -> str | None:
    """SPEC §5: the profile's envelope must find a result for the items sent; else one line naming
    the pointer that found nothing (a 202 is an async answer, judged by the ASYNC class).

    The preflight asks whether the envelope *works* on this target, not whether the target is
    right: results that carry ids, but not the one sent, mean the mapping found results and the
    target correlates them wrongly. That is CORE-02's FAIL to report with evidence, not a reason to
    call the target unusable (exit 3) and hide the defect."""
    if envelope.raw_results(resp) is None:
        return (f"one small valid batch got {resp.status_code} JSON, but the profile's envelope finds no results "
                f"there ({envelope.results_location}); check envelope."
                + ("results_error and envelope.failures_form" if envelope.failures_only else "results"))
    found = envelope.result_map(resp, sent)
    readable = [r for r in envelope.results(resp) if r.ok is not None]
    for item in sent:
        item_id = envelope.item_id(item)
        r = found.get(item_id)
        if r is None:
            if not envelope.by_position and any(x.id is not None for x in readable):
                continue  # results with ids, just not this one: CORE-02 judges the correlation
            where = "by position" if envelope.by_position else f"at {envelope.m.get('result_id')!r} (envelope.result_id)"
            return (f"one small valid batch got {resp.status_code} JSON with results, but none for the item sent "
                    f"(id {item_id!r}) {where}")
        if r.ok is None:
            return (f"the result of the item sent (id {item_id!r}) is neither ok nor error by the profile's envelope: "
                    f"{r.status!r} at {envelope.m.get('result_status')!r} (envelope.result_status, ok_values, "
                    "error_values)")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    ctx = _context(session.config)
    if ctx is None:
        return None
    scheduler = _worker(session.config)
    if scheduler is not None:
        return _work(session, ctx, scheduler)
    if ctx.status:
        _live.install(ctx.status)
    pre = _preflight(ctx)
    created = pre.pop("created", None)
    if pre["ok"] and created:
        _cleanup(ctx, created)  # the preflight's item, like a check's (a target that failed it is left alone)
    ctx.preflight = {k: v for k, v in pre.items() if k != "evidence"}
    ctx.preflight["reason"] = ctx.session.redactor.text(ctx.preflight.get("reason", "")) or ""
    ctx.preflight["evidence"] = [e.to_dict() for e in pre["evidence"]]
    if not pre["ok"]:
        return True  # no check runs against a target that cannot take one batch
    if ctx.checks_start is not None:
        ctx.checks_start()
    if ctx.concurrency > 1 and not ctx.maxfail and not session.config.option.collectonly:
        from ._engine import holds_a_stalled_body, is_concurrent, run_concurrently

        concurrent = [item for item in session.items if is_concurrent(item)]
        if len(concurrent) > 1 and any(holds_a_stalled_body(item) for item in concurrent) \
                and not _answers_beside_a_stalled_body(ctx):
            concurrent = [item for item in concurrent if not holds_a_stalled_body(item)]
        if len(concurrent) > 1:
            background = run_concurrently(ctx, concurrent)
            ran = {item.nodeid for item in concurrent}
            # Then every other check, alone and in collection order, while the background checks end;
            # last, any concurrent check that did not run (a worker or the child that could not run it).
            if session.testsfailed and not session.config.option.continue_on_collection_errors:
                raise session.Interrupted(f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                                          "during collection")  # as pytest's own loop says it
            try:
                _run_alone(session, [item for item in session.items if item.nodeid not in ran])
                late = set(background.join())
            except BaseException:
                background.abort()
                raise
            _run_alone(session, [item for item in session.items if item.nodeid in late])
            return True
    return None


def _run_alone(session: pytest.Session, items: list[pytest.Item]) -> None:
    """pytest's own test loop (_pytest.main.pytest_runtestloop) over `items`."""
    for i, item in enumerate(items):
        nextitem = items[i + 1] if i + 1 < len(items) else None
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)


def _answers_beside_a_stalled_body(ctx: RunContext) -> bool:
    """The preflight's second question, asked only when a check would hold a stalled body beside the
    others; the answer and its two exchanges go to the report's preflight section."""
    evidence: list[Exchange] = []
    factory = ItemFactory(ctx.profile, ctx.run_id, "preflight-stall")
    try:
        beside = Target(ctx.session, evidence).answers_beside_a_stalled_body(factory.valid(1))
    except Exception:  # noqa: BLE001 - unsure means no: the check then runs alone, as it always may
        beside = False
    _cleanup(ctx, factory.created)
    ctx.preflight["answers_beside_a_stalled_body"] = beside
    ctx.preflight.setdefault("evidence", []).extend(e.to_dict() for e in evidence)
    return beside


def _trim() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _work(session: pytest.Session, ctx: RunContext, scheduler: Any) -> bool:
    """A worker session's loop: take the next concurrent check until none is left or the run stops.
    Each check is set up and torn down completely (nextitem=None): the next one may be any check."""
    by_id = {item.nodeid: item for item in session.items}
    while not (ctx.frozen or ctx.stopped) and (nodeid := scheduler.next(accept=by_id.__contains__)) is not None:
        item = by_id[nodeid]  # `accept`: only a check this session collected
        try:
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=None)
        except BaseException:
            if not item.stash.get(RECORDED, False):
                scheduler.miss(nodeid)  # this worker is going down: the main session runs the check alone
            raise
        finally:
            scheduler.done(nodeid)
            _trim()
    return True


# New-style wrappers (wrapper=True): an exception raised in an old-style wrapper's teardown (a
# Ctrl-C landing there) makes pluggy print a PluggyTeardownRaisedWarning to stderr, where the CLI
# promises one line.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # observed()/series() find the check they belong to through the thread that runs it.
    _CURRENT.nodeid = item.nodeid
    try:
        return (yield)
    finally:
        _CURRENT.nodeid = None


# -- fixtures ----------------------------------------------------------------

def _ctx_or_skip(request: pytest.FixtureRequest) -> RunContext:
    ctx = _context(request.config)
    if ctx is None:
        pytest.skip("batchspec: no target (use --target URL or --profile FILE)")
    return ctx


@pytest.fixture
def profile(request: pytest.FixtureRequest):
    return _ctx_or_skip(request).profile


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> list[Exchange]:
    return request.node.stash.setdefault(EVIDENCE, [])


@pytest.fixture
def target(request: pytest.FixtureRequest, evidence: list[Exchange]) -> Target:
    return Target(_ctx_or_skip(request).session, evidence)


@pytest.fixture
def envelope(request: pytest.FixtureRequest):
    return _ctx_or_skip(request).session.envelope


@pytest.fixture
def items(request: pytest.FixtureRequest) -> Iterator[ItemFactory]:
    ctx = _ctx_or_skip(request)
    factory = ItemFactory(ctx.profile, ctx.run_id, request.node.name)
    yield factory
    _cleanup(ctx, factory.created)


def _cleanup(ctx: RunContext, ids: list[str]) -> None:
    """With endpoints.delete, delete what a check (or the preflight) may have created, best effort;
    kept out of the evidence."""
    if not ctx.profile.get("endpoints.delete"):
        return
    target = Target(ctx.session, [])
    for item_id in ids:
        try:
            target.for_item("delete", item_id, note="cleanup")
        except httpx.HTTPError:
            return  # the target is gone; nothing more to clean


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Numbers a check wants in the report (PERF ratios, timings)."""
    return request.node.stash.setdefault(FIGURES, {})


@pytest.fixture
def run_context(request: pytest.FixtureRequest) -> RunContext:
    return _ctx_or_skip(request)


# -- verdicts ----------------------------------------------------------------

def _outcome(item: pytest.Item, call: pytest.CallInfo, rep: pytest.TestReport, ctx: RunContext) -> CheckOutcome | None:
    rid = rule_of(item)
    if rid is None:
        return None
    rule = _catalogue.load().get(rid)
    doc = (getattr(item, "obj", None).__doc__ or "").strip() if getattr(item, "obj", None) else ""
    out = CheckOutcome(
        nodeid=item.nodeid, name=item.name, rule_id=rid, verdict=Verdict.PASS,
        requirement=doc.splitlines()[0] if doc else rule.requirement,
        duration_s=rep.duration,
        evidence=list(item.stash.get(EVIDENCE, [])),
        figures=dict(item.stash.get(FIGURES, {})),
        observed=observed_notes(item.nodeid),
        series=series_of(item.nodeid),
    )
    if rep.passed:
        # A passing check may still say what it measured (PERF ratios): figures["summary"].
        out.reason = str(out.figures.get("summary") or "")
        return out
    if rep.skipped:
        out.verdict = Verdict.SKIP
        longrepr = rep.longrepr
        out.reason = str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
        return out
    exc = call.excinfo.value if call.excinfo else None
    if rep.when == "call" and isinstance(exc, AssertionError):
        # A check of a rule's weaker clause ("MUST ...; SHOULD also ...") is judged at that clause's level.
        clause = item.get_closest_marker("level")
        level = str(clause.args[0]).upper() if clause and clause.args else rule.level
        out.verdict = Verdict(_catalogue.violation_verdict(level, ctx.strict))
        if isinstance(exc, RuleViolation):
            out.reason, out.expected, out.seen = exc.message, exc.expected, exc.seen
        else:
            out.reason = str(exc).split("\nassert ")[0] or "assertion failed"
        return out
    out.verdict = Verdict.ERROR
    if isinstance(exc, SetupError):
        out.reason = f"setup failed: {exc}"
    elif isinstance(exc, httpx.TimeoutException):
        out.reason = f"the target did not answer within the timeout ({type(exc).__name__})"
    elif isinstance(exc, httpx.HTTPError):
        out.reason = f"HTTP failure talking to the target: {type(exc).__name__}: {exc}"
    elif exc is not None:
        out.reason = f"the check could not be evaluated: {type(exc).__name__}: {exc}"
    else:
        out.reason = "the check could not be evaluated"
    out.reason = ctx.session.redactor.text(out.reason) or ""
    return out


def _stopped_answering(ctx: RunContext, out: CheckOutcome, call: pytest.CallInfo) -> None:
    """A target that stopped answering during the run: conformance._down.judge settles the outcome."""
    from ._down import judge

    judge(out, ctx.session.watch, call.excinfo.value if call.excinfo else None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    ctx = _context(item.config)
    if ctx is not None and ctx._session is not None:
        ctx.session.watch.refuse()  # no check starts against a target that stopped answering


# pytest renders a failure's traceback with the check's source (ast.parse). CPython 3.11's parser
# keeps its recursion depth per interpreter, not per thread: two checks failing at the same moment in
# two worker sessions broke a worker with "SystemError: AST constructor recursion depth mismatch".
# Reports are made one at a time (they take microseconds, a failure's a few milliseconds).
_REPORTING = threading.Lock()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    with _REPORTING:
        rep: pytest.TestReport = yield
    _record(item, call, rep)
    return rep


def _record(item: pytest.Item, call: pytest.CallInfo, rep: pytest.TestReport) -> None:
    """The check's outcome into the run's context, once per check (from its first decisive report)."""
    ctx = _context(item.config)
    if ctx is None:
        return
    if item.stash.get(RECORDED, False):
        return
    if rep.when == "setup" and rep.passed:
        return
    if rep.when == "teardown" and rep.passed:
        return
    out = _outcome(item, call, rep, ctx)
    if out is None:
        return
    _stopped_answering(ctx, out, call)
    item.stash[RECORDED] = True
    stop = ctx.record(out)  # concurrent checks finish in worker threads: recording takes the run's lock
    if stop:
        item.session.shouldstop = stop


@pytest.hookimpl(wrapper=True)
def pytest_keyboard_interrupt(excinfo: Any) -> Iterator[None]:
    # Called on the session's config only; every context of this process is the same run.
    if not isinstance(excinfo.value, pytest.Session.Interrupted):  # -x / --maxfail: not a signal
        _INTERRUPTS.append("SIGTERM" if isinstance(excinfo.value, Terminated) else "SIGINT")
        if _RUNS:
            _drop_unnumbered_frames(excinfo.tb)
    try:
        return (yield)
    except Exception:
        if not _RUNS:
            raise  # not a batchspec session: pytest's business
        # pytest's terminal reporter renders the interrupted traceback here, and that can fail (on
        # CPython 3.11 a frame caught by the signal between two instructions has no line number: a
        # TypeError in its formatting, then exit 1 instead of 130/143). The interrupt is recorded
        # above; the reports and the exit code follow in pytest_sessionfinish all the same.
        return None


def _drop_unnumbered_frames(tb: Any) -> None:
    """Unlink the traceback entries that have no line number. On CPython 3.11 the frame a signal
    interrupts can have none (``tb_lineno is None``), and pytest's terminal reporter, rendering the
    interrupt, fails on it (``None - 1``), then asserts its rendering exists when the session ends:
    exit 1 instead of 130/143 (seen in CI, 2 runs in 4). The entry says nothing a reader needs."""
    while tb is not None and tb.tb_next is not None:
        if tb.tb_next.tb_lineno is None:
            tb.tb_next = tb.tb_next.tb_next
        else:
            tb = tb.tb_next


_INTERRUPTS: list[str] = []
_RUNS: list[RunContext] = []  # batchspec contexts configured in this process (plain pytest or the engine)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ctx = _context(session.config)
    if ctx is None or _worker(session.config) is not None:
        return  # the main session builds and writes the reports
    _live.install(None)
    if exitstatus == pytest.ExitCode.INTERRUPTED and _INTERRUPTS:
        ctx.interrupted = _INTERRUPTS[-1]
    _INTERRUPTS.clear()
    # A second Ctrl-C must not cut the reports of an interrupted run in half.
    masked = {}
    if ctx.interrupted and threading.current_thread() is threading.main_thread():
        masked = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if ctx.checks_done is not None:
            try:
                ctx.checks_done()
            except Exception:  # noqa: BLE001 - a courtesy to the caller; the reports come first
                pass
        if ctx.concurrency > 1:
            from ._engine import release_memory

            release_memory()  # before the reports are rendered (they peak at the end of the run)
        ctx.report = ctx.build_report()
        if ctx.report_dir:
            from .reports import write_all

            write_all(ctx.report, ctx.report_dir, ctx.profile.secrets())
            from ._engine import BodyFiles

            BodyFiles.prune(ctx.report_dir)
    finally:
        ctx.close()
        for sig, handler in masked.items():
            signal.signal(sig, handler)
    if ctx.report is not None:
        code = ctx.report.exit_code()
        session.exitstatus = {0: pytest.ExitCode.OK, 1: pytest.ExitCode.TESTS_FAILED}.get(code, code)
        if ctx.interrupted and session.config.stash.get(PLAIN, False):
            print(f"batchspec: {ctx.halted()} ({ctx.interrupted}); reports written", file=sys.stderr)
        if ctx.report.target_stopped and session.config.stash.get(PLAIN, False):
            print(f"batchspec: {ctx.report.target_stopped['message']}", file=sys.stderr)
