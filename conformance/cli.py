"""`batchspec`: a thin front end over the engine (run, serve, rules, init, diff)."""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from . import _catalogue
from ._model import CheckOutcome, RunReport, Verdict
from ._profile import Profile, ProfileError, bundled, bundled_text, load

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERNAL = 0, 1, 2, 3, 4
_COLORS = {"PASS": "32", "FAIL": "31", "WARN": "33", "INFO": "36", "ERROR": "35", "SKIP": "90", "PENDING": "90", "WAIVED": "34"}


class UsageError(Exception):
    pass


def _paint(text: str, verdict: str, stream: Any) -> str:
    if not getattr(stream, "isatty", lambda: False)() or os.environ.get("NO_COLOR"):
        return text
    return f"\033[{_COLORS.get(verdict, '0')}m{text}\033[0m"


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


def _progress(out: CheckOutcome, stream: Any = None) -> None:
    stream = stream or sys.stdout
    v = out.verdict.value
    line = f"  {_paint(f'{v:<7}', v, stream)} {out.rule_id:<9} {out.name}"
    if out.verdict not in (Verdict.PASS,) and out.reason:
        line += f" — {out.reason[:160]}"
    print(line, file=stream, flush=True)


def print_summary(report: RunReport, stream: Any = None) -> None:
    stream = stream or sys.stdout
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
    for note in report.notes:
        print(f"note: {note}", file=stream)


def _load_profile(args: argparse.Namespace) -> Profile:
    if args.profile:
        profile = load(args.profile)
        if args.url:
            profile = profile.with_base_url(_check_url(args.url))
        return profile
    return bundled().with_base_url(_check_url(args.url))


def cmd_run(args: argparse.Namespace) -> int:
    from ._engine import run

    waivers = None
    if args.waivers:
        from . import _waivers

        try:
            waivers = _waivers.load(args.waivers)
        except _waivers.WaiverError as exc:
            raise UsageError(str(exc)) from None
    classes = _split(args.classes)
    rules = _split(args.rules)
    cat = _catalogue.load()
    for c in classes or []:
        if c not in cat.class_ids:
            raise UsageError(f"unknown class {c!r} (known: {', '.join(cat.class_ids)})")
    for r in rules or []:
        if r not in cat:
            raise UsageError(f"unknown rule {r!r} (see `batchspec rules`)")
    server = None
    tmp = None
    if not args.url and not args.profile:
        from reference_server import start_in_thread

        tmp = tempfile.TemporaryDirectory(prefix="batchspec-")
        server = start_in_thread(db_path=os.path.join(tmp.name, "reference.db"))
        profile = bundled().with_base_url(server.base_url)
        print(f"batchspec: started the embedded reference server at {server.base_url}", flush=True)
    else:
        profile = _load_profile(args)
    try:
        shown = profile.base_url
        for secret in profile.secrets():
            shown = shown.replace(secret, "<redacted>")
        print(f"batchspec: checking {shown} (profile: {profile.source})", flush=True)
        report = run(
            profile,
            classes=classes,
            rules=rules,
            strict=args.strict,
            report_dir=args.report_dir,
            waivers=waivers,
            waivers_source=args.waivers,
            progress=None if args.quiet else functools.partial(_progress, stream=sys.stdout),
        )
    finally:
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()
    if report.preflight and not report.preflight.get("ok", True):
        print(f"batchspec: target unusable: {report.preflight.get('reason')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print_summary(report)
    if args.report_dir:
        print(f"\nreports written to {args.report_dir}/ (junit.xml, report.json, report.md, report.html, summary.md)")
    code = report.exit_code()
    print(f"exit code {code}: " + ("every MUST of the declared classes passed" if code == 0 else "a rule failed"))
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from reference_server import serve

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

        print(json.dumps([r.__dict__ | {"class": r.cls} for r in rules], indent=2))
        return EXIT_OK
    for r in rules:
        state = "  (pending)" if r.pending else ""
        if args.format == "md":
            print(f"| {r.id} | {r.level} | {r.title} |")
        else:
            print(f"{r.id:<9} {r.level:<8} {r.title}{state}")
            if args.verbose:
                print(f"{'':<18}{r.rationale}\n{'':<18}seed: {r.seed}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; use --force to overwrite")
    path.write_text(bundled_text("starter"), encoding="utf-8")
    print(f"wrote a starter profile to {path}; edit it, then: batchspec run --profile {path}")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from ._diff import diff_command

    return diff_command(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="batchspec", description="Conformance test kit for batch HTTP APIs.")
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
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("serve", help="run the reference server until interrupted")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--db", default="batchspec-reference.db", help="SQLite database file, or a postgresql:// URL (instances on one database form one service)")
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=cmd_serve)

    ru = sub.add_parser("rules", help="print the rule catalogue")
    ru.add_argument("--class", dest="classes", action="append")
    ru.add_argument("--format", choices=["text", "md", "json"], default="text")
    ru.add_argument("-v", "--verbose", action="store_true", help="with rationale and seed section")
    ru.set_defaults(func=cmd_rules)

    i = sub.add_parser("init", help="write a commented starter profile")
    i.add_argument("path", nargs="?", default="batchspec.yaml")
    i.add_argument("--force", action="store_true")
    i.set_defaults(func=cmd_init)

    d = sub.add_parser("diff", help="compare two report.json files (exit 1 on a regression)")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--format", choices=["md", "text", "json"], default="md")
    d.set_defaults(func=cmd_diff)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ProfileError) as exc:
        print(f"batchspec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("batchspec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the kit never shows a traceback; BATCHSPEC_DEBUG=1 does
        if os.environ.get("BATCHSPEC_DEBUG"):
            raise
        print(f"batchspec: internal error: {type(exc).__name__}: {exc} (BATCHSPEC_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
