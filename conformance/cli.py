"""`batchspec`: a thin front end over the engine (run, serve, rules, init, diff)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from . import _catalogue
from ._model import CheckOutcome, RunReport, Verdict
from ._profile import Profile, ProfileError, bundled, bundled_text, load

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4
_COLORS = {"PASS": "32", "FAIL": "31", "WARN": "33", "INFO": "36", "ERROR": "35", "SKIP": "90", "PENDING": "90", "WAIVED": "34"}


class UsageError(Exception):
    pass


def _color(stream: Any) -> bool:
    """NO_COLOR (no-color.org) wins, then FORCE_COLOR (CI logs that render ANSI), then: a terminal?"""
    if os.environ.get("NO_COLOR"):
        return False
    force = os.environ.get("FORCE_COLOR")
    if force is not None and force not in ("", "0", "false"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


def _paint(text: str, verdict: str, stream: Any) -> str:
    if not _color(stream):
        return text
    return f"\033[{_COLORS.get(verdict, '0')}m{text}\033[0m"


def _silence(stream: Any) -> None:
    """The reader went away (`batchspec ... | head`): send the rest of this stream to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _print(*parts: Any, file: Any = None, **kw: Any) -> None:
    """print() that survives a closed pipe: the run goes on (reports, exit code), only the output stops."""
    stream = file or sys.stdout
    try:
        print(*parts, file=stream, **kw)
    except BrokenPipeError:
        _silence(stream)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip().upper() for raw in values for v in raw.split(",") if v.strip()]
    return out or None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not a target URL: {url!r} (expected http://host[:port][/base])")
    try:
        parts.port
    except ValueError:
        raise UsageError(f"not a target URL: {url!r} (bad port)") from None
    return url


class Live:
    """Live lines: one per finished check with an `[n/N]` counter, and status ticks of long checks
    (ROB-01's fuzzing): rewritten in place on a terminal, at most one line every few seconds in a log."""

    EVERY_S = 5.0

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.total = 0, 0
        self.last_tick = 0.0
        self.pending_cr = False

    def _clear(self) -> None:
        if self.pending_cr:
            _print("\r\033[K", end="", file=self.stream, flush=True)
            self.pending_cr = False

    def check(self, out: CheckOutcome, done: int, total: int) -> None:
        self.done, self.total = done, total
        self._clear()
        v = out.verdict.value
        width = len(str(total))
        line = f"  [{done:>{width}}/{total}] {_paint(f'{v:<7}', v, self.stream)} {out.rule_id:<9} {out.name}"
        if out.verdict not in (Verdict.PASS,) and out.reason:
            line += f" — {out.reason[:160]}"
        _print(line, file=self.stream, flush=True)

    def status(self, text: str) -> None:
        import time

        now = time.monotonic()
        if not self.tty and now - self.last_tick < self.EVERY_S:
            return
        self.last_tick = now
        line = f"  [{min(self.done + 1, self.total or 1)}/{self.total}] … {text}"
        if self.tty:
            _print(f"\r\033[K{line[:150]}", end="", file=self.stream, flush=True)
            self.pending_cr = True
        else:
            _print(line, file=self.stream, flush=True)


def _progress(out: CheckOutcome, done: int = 0, total: int = 0, stream: Any = None) -> None:
    Live(stream).check(out, done, total)


def print_summary(report: RunReport, stream: Any = None) -> None:
    stream = stream or sys.stdout
    print = _print  # noqa: A001 - a closed pipe stops the output, never the run
    verdicts = ["PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED"]
    by_cls: dict[str, dict[str, int]] = {}
    for r in report.rules:
        by_cls.setdefault(r.cls, {v: 0 for v in verdicts})[r.verdict.value] += 1
    print("", file=stream)
    print(f"{'class':<7}" + "".join(f"{v:>8}" for v in verdicts), file=stream)
    for cls, counts in by_cls.items():
        print(f"{cls:<7}" + "".join(f"{(counts[v] or '·'):>8}" for v in verdicts), file=stream)
    total = report.counts()
    print(f"{'all':<7}" + "".join(f"{total[v]:>8}" for v in verdicts), file=stream)
    flagged = [r for r in report.rules if r.verdict in (Verdict.FAIL, Verdict.ERROR, Verdict.WARN, Verdict.WAIVED)]
    if flagged:
        print("", file=stream)
        for r in flagged:
            v = r.verdict.value
            print(f"{_paint(f'{v:<7}', v, stream)} {r.id} {r.level}: {r.title}\n          {r.reason[:300]}", file=stream)
    partial = [r for r in report.rules if r.verdict == Verdict.PASS and r.partial]
    if partial:
        print("", file=stream)
        for r in partial:
            print(f"{_paint('PASS*  ', 'PASS', stream)} {r.id} {r.label()[5:][:300]}", file=stream)
    if report.conformance:
        from ._levels import headline

        print(f"\nconformance: {headline(report.conformance)}", file=stream)
    for note in report.notes:
        print(f"note: {note}", file=stream)
    if report.target_stopped:
        print(f"\n{_paint('TARGET STOPPED', 'ERROR', stream)} {report.target_stopped['message']}", file=stream)


def _load_profile(args: argparse.Namespace) -> Profile:
    if args.profile:
        profile = load(args.profile)
        if args.url:
            profile = profile.with_base_url(_check_url(args.url))
        return profile
    return bundled().with_base_url(_check_url(args.url))


def _check_report_dir(path: str) -> None:
    from ._engine import ReportDirError, check_report_dir

    try:
        check_report_dir(path)
    except ReportDirError as exc:
        raise UsageError(str(exc)) from None


def _verdict_line(report: RunReport) -> str:
    code = report.exit_code()
    if report.interrupted:
        return f"exit code {code}: {report.interrupted['message']} ({report.interrupted['signal']}); the reports say so"
    if code == 3 and report.target_stopped:
        return f"exit code 3: {report.target_stopped['message']}"
    if code != 0:
        return f"exit code {code}: a rule failed"
    waived = [r.id for r in report.rules if r.verdict == Verdict.WAIVED and r.level.startswith("MUST")]
    if waived:
        return (f"exit code 0: every MUST of the declared classes passed, except {len(waived)} waived "
                f"({', '.join(waived)})")
    return "exit code 0: every MUST of the declared classes passed"


def _spare(profile: Any, classes: list[str] | None, rules: list[str] | None, concurrency: int | None,
           maxfail: int) -> Any:
    """A child process for the check that runs on a core of its own (conformance/_child.py),
    started now so that its imports overlap the kit's start; None when no such check will run beside
    the others (not selected, not declared, --concurrency 1, --exitfirst/--maxfail)."""
    from ._child import IN_OWN_PROCESS, Spare

    if maxfail or (concurrency is not None and concurrency < 2):
        return None
    cat = _catalogue.load()
    wanted = [rid for rid in IN_OWN_PROCESS
              if cat.get(rid).cls in profile.classes and (not classes or cat.get(rid).cls in classes)
              and (not rules or rid in rules)]
    if not wanted:
        return None
    return Spare.start([m for rid in wanted for m in IN_OWN_PROCESS[rid]])


def _embedded_server(db_path: str, where: str) -> Any:
    """The embedded reference server: in the kit's process (`thread`, the default), or in a process
    of its own (`process`: reference_server.start_in_process), where its work runs on the other core
    instead of sharing the kit's interpreter lock with every check. Measured on 2 cores
    (docs/performance.md, rounds 9, 12 and 13): `process` was ~7-10% faster while the server ran on h11
    and the asyncio loop; on httptools and uvloop it gains nothing (round 13: 1.00x) and costs ~25-30 MiB
    more peak memory, hence not the default. Where a child process cannot be started, the server runs
    in the kit's process and the console says so."""
    from reference_server import start_in_process, start_in_thread

    if where == "process":
        try:
            return start_in_process(db_path)
        except OSError as exc:
            _print(f"batchspec: the embedded reference server runs in the kit's process ({type(exc).__name__}: "
                   f"{exc})", file=sys.stderr)
    return start_in_thread(db_path=db_path)


def _stop_soon(server: Any) -> Callable[[], None] | None:
    """What the engine calls once the last check has ended: the in-thread server begins its graceful
    shutdown (~0.2 s, mostly uvicorn's polling) while the reports are rendered, and `_stop` waits
    for it after them. A server in a process of its own is killed at once later: nothing to start."""
    from reference_server import RunningServer

    return server.request_stop if isinstance(server, RunningServer) else None


def _stop(server: Any) -> None:
    """Stop the embedded server. In a process of its own it is killed at once: its database is a
    temporary file removed next, so there is nothing to shut down for (a graceful stop cost ~0.2 s)."""
    from reference_server import ServerProcess

    if isinstance(server, ServerProcess):
        server.stop(graceful=False)
    else:
        server.stop()


def cmd_run(args: argparse.Namespace) -> int:
    from ._engine import freeze_startup, limit_malloc_arenas, run, tune_gc

    limit_malloc_arenas()

    maxfail = 1 if args.exitfirst else (args.maxfail or 0)
    if maxfail < 0:
        raise UsageError("--maxfail takes a number of FAILs (1 or more)")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency takes a number of checks at once (1 or more)")

    waivers = None
    if args.waivers:
        from . import _waivers

        try:
            waivers = _waivers.load(args.waivers)
        except _waivers.WaiverError as exc:
            raise UsageError(str(exc)) from None
    from ._engine import SelectionError, check_selection

    embedded = not args.url and not args.profile
    profile = bundled() if embedded else _load_profile(args)
    try:
        # Checked before anything starts or any request is sent (SPEC §5: exit 2).
        classes, rules = check_selection(profile, args.classes, args.rules)
    except SelectionError as exc:
        raise UsageError(str(exc)) from None
    fail_under = None
    if args.fail_under is not None:
        from ._levels import parse_level

        try:
            fail_under = parse_level(args.fail_under, _catalogue.load())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.baseline:
        from .reports.html import load_baseline

        try:
            load_baseline(args.baseline)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.report_dir:
        _check_report_dir(args.report_dir)  # before the first request (SPEC §5: exit 2)
    spare = _spare(profile, classes, rules, args.concurrency, maxfail)
    server = None
    tmp = None
    if embedded:
        tmp = tempfile.TemporaryDirectory(prefix="batchspec-")
        server = _embedded_server(os.path.join(tmp.name, "reference.db"), args.embedded_server)
        profile = profile.with_base_url(server.base_url)
        _print(f"batchspec: started the embedded reference server at {server.base_url}", flush=True)
    live = None if args.quiet else Live(sys.stdout)
    restore_gc = tune_gc()  # after the fork: the child keeps the collector's defaults
    try:
        shown = profile.base_url
        for secret in profile.secrets():
            shown = shown.replace(secret, "<redacted>")
        _print(f"batchspec: checking {shown} (profile: {profile.source})", flush=True)
        report = run(
            profile,
            classes=classes,
            rules=rules,
            strict=args.strict,
            report_dir=args.report_dir,
            waivers=waivers,
            waivers_source=args.waivers,
            progress=live.check if live else None,
            status=live.status if live else None,
            maxfail=maxfail,
            evidence=args.evidence,
            baseline=args.baseline,
            concurrency=args.concurrency,
            spare=spare,
            checks_done=_stop_soon(server) if server is not None else None,
            checks_start=freeze_startup,
        )
    finally:
        restore_gc()
        if spare is not None:
            spare.close()
        failed = server.failure() if server is not None else None
        if server is not None:
            _stop(server)
        if tmp is not None:
            tmp.cleanup()
    if live:
        live._clear()
    if report.preflight and not report.preflight.get("ok", True) and not report.interrupted:
        _print(f"batchspec: target unusable: {report.preflight.get('reason')}", file=sys.stderr)
        if failed:
            _print(f"batchspec: {failed}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print_summary(report)
    if args.report_dir:
        _print(f"\nreports written to {args.report_dir}/ (junit.xml, report.json, report.md, report.html, summary.md, "
               "badge.svg, exchanges.har)")
    if fail_under is not None and not report.interrupted:
        # The gate is the level (like coverage's --fail-under): rules above it do not fail the run.
        reached = int((report.conformance or {}).get("reached", 0))
        code = EXIT_OK if reached >= fail_under else EXIT_FAIL
        _print(f"exit code {code}: conformance level {reached} reached, {fail_under} required")
        return code
    _print(_verdict_line(report))
    if report.interrupted:
        _print(f"batchspec: {report.interrupted['message']} ({report.interrupted['signal']})"
               + (f"; reports written to {args.report_dir}/" if args.report_dir else ""), file=sys.stderr)
    return report.exit_code()


def cmd_serve(args: argparse.Namespace) -> int:
    from reference_server import serve

    host = f"[{args.host}]" if ":" in args.host else args.host
    db = args.db
    if "://" in db and "@" in db:  # a postgresql:// URL: never print its password
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(db)
        if parts.password:
            db = urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)))
    _print(f"batchspec: reference server at http://{host}:{args.port} (db: {db}, workers: {args.workers}); "
           "Ctrl-C stops it", flush=True)
    serve(host=args.host, port=args.port, db_path=args.db, workers=args.workers)
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    cat = _catalogue.load()
    classes = _split(args.classes)
    for c in classes or []:
        if c not in cat.class_ids:
            raise UsageError(f"unknown class {c!r} (known: {', '.join(cat.class_ids)})")
    rules = [r for r in cat.rules if not classes or r.cls in classes]
    if args.format == "json":
        import json

        _print(json.dumps([r.__dict__ | {"class": r.cls} for r in rules], indent=2))
        return EXIT_OK
    for r in rules:
        state = "  (pending)" if r.pending else ""
        if args.format == "md":
            _print(f"| {r.id} | {r.level} | {r.title} |")
        else:
            _print(f"{r.id:<9} {r.level:<8} {r.title}{state}")
            if args.verbose:
                _print(f"{'':<18}{r.rationale}\n{'':<18}seed: {r.seed}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; use --force to overwrite")
    if args.from_openapi:
        from . import _draft

        try:
            text = _draft.draft_profile_text(args.from_openapi, str(path))
        except _draft.DraftError as exc:
            raise UsageError(str(exc)) from None
        from ._profile import loads

        loads(text, str(path))  # a draft the kit itself cannot load is a bug of the drafter, never the user's
        path.write_text(text, encoding="utf-8")
        todo = text.count("# TODO")
        _print(f"wrote a profile drafted from {args.from_openapi} to {path}: every `guess:` comment says where a value "
               f"came from{f', {todo} TODO(s) left' if todo else ''}; check it, then: batchspec run --profile {path}")
        return EXIT_OK
    # The starter's header says how to run it: with this file's name, not the default one.
    text = bundled_text("starter").replace("batchspec run --profile batchspec.yaml", f"batchspec run --profile {path}", 1)
    path.write_text(text, encoding="utf-8")
    _print(f"wrote a starter profile to {path}; edit it, then: batchspec run --profile {path}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from ._diff import diff_command

    return diff_command(args)


def cmd_matrix(args: argparse.Namespace) -> int:
    from ._matrix import MatrixError, write_matrix

    try:
        output = args.output or (None if args.keep or args.into else "matrix")
        written = write_matrix(args.reports, output, names=args.name, allow_mixed=args.allow_mixed, names_from=args.names_from,
                               keep=args.keep, into=args.into)
    except MatrixError as exc:
        raise UsageError(str(exc)) from None
    print("wrote " + ", ".join(str(p) for p in written))
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    from ._engine import tool_version

    p = argparse.ArgumentParser(prog="batchspec", description="Conformance test kit for batch HTTP APIs.")
    p.add_argument("--version", action="version", version=f"batchspec {tool_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="check a target (default: the embedded reference server)")
    r.add_argument("url", nargs="?", help="base URL of the target (default: the profile's, or the embedded server)")
    r.add_argument("--profile", help="profile YAML (default: the bundled reference profile)")
    r.add_argument("--class", dest="classes", action="append", help="only this class (repeatable or comma-separated)")
    r.add_argument("--rule", dest="rules", action="append", help="only this rule id (repeatable or comma-separated)")
    r.add_argument("--strict", action="store_true", help="a failing SHOULD is a FAIL")
    r.add_argument("--report-dir", default="reports", help="where reports go (default: reports)")
    r.add_argument("--waivers", help="YAML file of accepted deviations (rule, reason, expires)")
    r.add_argument("-q", "--quiet", action="store_true", help="no live progress")
    r.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first FAIL (the rules not reached are SKIP)")
    r.add_argument("--maxfail", type=int, metavar="N", help="stop after N FAILs")
    r.add_argument("--concurrency", type=int, metavar="N", default=None,
                   help="run up to N of the checks marked concurrent at once (default 4; 1: every check alone, "
                        "e.g. for a rate-limited target; -x/--maxfail imply 1)")
    r.add_argument("--embedded-server", choices=("thread", "process"), default="thread",
                   help="where the embedded reference server runs: in the kit's process (default), or in a "
                        "process of its own (its work on another core, ~25-30 MiB more memory); ignored with a URL or "
                        "--profile")
    r.add_argument("--fail-under", metavar="LEVEL", help="exit 1 unless this conformance level (1-4 or its name) "
                   "is reached; rules above it do not fail the run")
    r.add_argument("--evidence", choices=["summary", "all"], default="summary",
                   help="report.json keeps passing checks' exchanges too with 'all' (default: counts only)")
    r.add_argument("--baseline", metavar="OLD.json", help="an earlier report.json: report.html shows what changed")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="run the reference server until interrupted",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=8000, help="port to listen on")
    s.add_argument("--db", default="batchspec-reference.db", help="SQLite database file, or a postgresql:// URL (instances on one database form one service)")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the database")
    s.set_defaults(func=cmd_serve)

    ru = sub.add_parser("rules", help="print the rule catalogue")
    ru.add_argument("--class", dest="classes", action="append")
    ru.add_argument("--format", choices=["text", "md", "json"], default="text")
    ru.add_argument("-v", "--verbose", action="store_true", help="with rationale and seed section")
    ru.set_defaults(func=cmd_rules)

    i = sub.add_parser("init", help="write a commented starter profile")
    i.add_argument("path", nargs="?", default="batchspec.yaml")
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.add_argument("--from-openapi", metavar="FILE_OR_URL",
                   help="draft the profile from the target's OpenAPI document (guesses are commented; x-batch states the rest)")
    i.set_defaults(func=cmd_init)

    d = sub.add_parser("diff", help="compare two report.json files (exit 1 on a regression)")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--format", choices=["md", "text", "json"], default="md")
    d.add_argument("--allow-lost-coverage", action="store_true",
                   help="a MUST rule going from PASS to SKIP/PENDING/absent is not a regression")
    d.set_defaults(func=cmd_diff)

    m = sub.add_parser("matrix", help="a compatibility matrix of several report.json files (HTML + Markdown)")
    m.add_argument("reports", nargs="+", metavar="REPORT.json")
    m.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="where matrix.html and matrix.md go (default: matrix, unless --keep or --into is given)")
    m.add_argument("--name", action="append", help="column name per report, in order (default: the target)")
    m.add_argument("--names-from", choices=["target", "profile"], default="target",
                   help="default column names: the target URL, or the profile's file name (sqs-moto)")
    m.add_argument("--keep", metavar="DIR",
                   help="also write each report reduced to what a matrix reads (no evidence) to DIR/<profile>.json")
    m.add_argument("--into", metavar="FILE",
                   help="write the Markdown matrix between the <!-- batchspec matrix --> and "
                        "<!-- /batchspec matrix --> lines of FILE")
    m.add_argument("--allow-mixed", action="store_true",
                   help="accept reports of different catalogue versions and show the difference")
    m.set_defaults(func=cmd_matrix)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ._engine import Terminated, _raise_terminated

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)  # SIGTERM ends a run like Ctrl-C: exit 143
        # A shell starts background jobs with SIGINT ignored; `kill -INT` must still stop a run cleanly.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions and not os.environ.get("BATCHSPEC_DEBUG"):
                # Libraries' warnings are not the kit's to print: stderr carries its own lines
                # only. Worker sessions (threads) run outside pytest's per-check warning capture.
                warnings.simplefilter("ignore")
            return int(args.func(args))
    except (UsageError, ProfileError) as exc:
        _print(f"batchspec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `batchspec ... | head`: the reader has what it wanted
        _silence(sys.stdout)
        return EXIT_OK
    except KeyboardInterrupt as exc:
        _print("batchspec: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # the kit never shows a traceback; BATCHSPEC_DEBUG=1 does
        if os.environ.get("BATCHSPEC_DEBUG"):
            raise
        print(f"batchspec: internal error: {type(exc).__name__}: {exc} (BATCHSPEC_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


def entry() -> None:
    """The `batchspec` command (and `python -m conformance`): `main()`, then out of the process at
    once, as mypy's --fast-exit does. The interpreter's own shutdown frees every object of the run one
    by one and collects them, ~0.1 s after a full embedded run (issue 18), and nothing in it is needed
    by a process that ends: the reports are written and closed, the child and the embedded server
    are stopped, and what is left is done here (the exit handlers run, the output is flushed).
    `main()` itself returns: the kit's tests and other callers run it inside their own process."""
    import atexit

    code = main()
    try:
        atexit._run_exitfuncs()  # tempfile's and logging's clean-ups, and any library's
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`| head`): nothing more can reach it
                pass
        os._exit(code)


if __name__ == "__main__":
    entry()
