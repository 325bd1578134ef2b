"""Waivers (SPEC §5): accepted deviations with a reason and an expiry date.

A waiver turns a FAIL of its rule into WAIVED until it expires, so a team can gate merges on
regressions while it fixes known gaps. Every waiver ends up with a status that every report shows:

- ``active``:  the rule FAILed and the waiver accepted it (verdict WAIVED, exit code unaffected);
- ``expired``: the rule FAILed and the waiver's date has passed: the FAIL counts again;
- ``stale``:   the rule PASSes now: the waiver is no longer needed and should be removed;
- ``unused``:  the waiver did not apply: its target pattern does not match, or the rule was not
  evaluated (SKIP, PENDING), could not be evaluated (ERROR: a waiver never hides an ERROR), or is
  only a WARN/INFO (which never fails the run; a SHOULD that FAILs under --strict is waivable).
"""
from __future__ import annotations

import datetime as _dt
import difflib
import fnmatch
from pathlib import Path
from typing import Any

import yaml

from ._model import RunReport, Verdict

KEYS = ("rule", "reason", "expires", "target")


class _Loader(yaml.SafeLoader):
    """Dates stay strings, so a bad one (2030-13-01) is our error with its line, not a YAML crash."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class WaiverError(Exception):
    """The waivers file is unusable (a usage error: exit code 2)."""


def today_utc() -> _dt.date:
    # CI machines and laptops disagree about local time; expiry is judged on the UTC date.
    return _dt.datetime.now(_dt.timezone.utc).date()


def _date(value: Any, where: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        try:
            return _dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise WaiverError(f"{where}: expires must be a date (YYYY-MM-DD), got {value!r}")


def _known_rules() -> set[str] | None:
    try:
        from . import _catalogue

        return {r.id for r in _catalogue.load().rules}
    except Exception:  # the catalogue is the engine's concern; without it we cannot check ids
        return None


def _at(lines: dict[tuple[Any, ...], int] | None, path: tuple[Any, ...]) -> str:
    line = (lines or {}).get(path)
    return f" (line {line})" if line else ""


def _hint(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def parse(entries: Any, source: str = "waivers", lines: dict[tuple[Any, ...], int] | None = None) -> list[dict[str, Any]]:
    """Validate waiver entries (as loaded from YAML) into plain dicts with an ISO `expires`.

    `lines` (JSON path -> line, from the YAML text) lets every error name its line, as profile errors do.
    """
    base: tuple[Any, ...] = ()
    if isinstance(entries, dict) and set(entries) == {"waivers"}:
        entries, base = entries["waivers"], ("waivers",)
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        extra = ""
        if isinstance(entries, dict):
            wrong = [k for k in entries if k != "waivers"]
            extra = f" (found key(s) {', '.join(map(str, wrong))}{_hint(str(wrong[0]), ['waivers']) if wrong else ''})"
        raise WaiverError(f"{source}: a waivers file is a list of {{rule, reason, expires}} entries "
                          f"(optionally under a top-level 'waivers:' key){extra}")
    known = _known_rules()
    out = []
    for i, e in enumerate(entries):
        here = base + (i,)
        where = f"{source}: entry {i + 1}{_at(lines, here)}"
        if not isinstance(e, dict):
            raise WaiverError(f"{where}: expected a mapping with rule, reason, expires")
        unknown = sorted(map(str, set(e) - set(KEYS)))
        if unknown:
            raise WaiverError(f"{source}: entry {i + 1}{_at(lines, here + (unknown[0],))}: unknown key "
                              f"'{unknown[0]}'{_hint(unknown[0], KEYS) or f'; allowed: {chr(44).join(KEYS)}'}")
        for key in ("rule", "reason", "expires"):
            if e.get(key) in (None, ""):
                raise WaiverError(f"{where}: '{key}' is required")
        rule = str(e["rule"]).strip().upper()
        # Rule ids are fixed (SPEC §4): an unknown id is a typo that would silently waive nothing.
        if known is not None and rule not in known:
            raise WaiverError(f"{source}: entry {i + 1}{_at(lines, here + ('rule',))}: unknown rule {rule!r}"
                              f"{_hint(rule, known) or ' (see `batchspec rules`)'}")
        where = f"{source}: entry {i + 1}{_at(lines, here + ('expires',))}"
        target = e.get("target")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise WaiverError(f"{source}: entry {i + 1}{_at(lines, here + ('target',))}: target must be a non-empty string (a URL or a glob such as "
                              "'https://staging.example.com/*')")
        out.append({"rule": rule, "reason": str(e["reason"]).strip(),
                    "expires": _date(e["expires"], where).isoformat(), "target": target})
    return out


def load(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WaiverError(f"{p}: no such waivers file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WaiverError(f"{p}: cannot read the waivers file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise WaiverError(f"{p}{where}: not valid YAML: {problem}") from None
    try:
        from ._profile import _line_map

        lines = _line_map(text)
    except Exception:  # line numbers are a help, never a reason to refuse a file
        lines = {}
    return parse(data, str(p), lines)


def _matches(pattern: str | None, target: str) -> bool:
    if not pattern:
        return True
    return pattern.rstrip("/") == target.rstrip("/") or fnmatch.fnmatchcase(target, pattern)


def apply(report: RunReport, waivers: list[dict[str, Any]], *, source: str | None = None,
          today: _dt.date | None = None) -> None:
    """Apply waivers to a finished report in place: FAIL -> WAIVED, and a status for every waiver."""
    today = today or today_utc()
    by_id = {r.id: r for r in report.rules}
    statuses: list[dict[str, Any]] = []
    for w in parse(waivers, source or "waivers"):
        info = dict(w)
        rule = by_id.get(w["rule"])
        expired = _dt.date.fromisoformat(w["expires"]) < today
        if rule is None:
            info.update(status="unused", detail="the rule is not in this report")
        elif not _matches(w.get("target"), report.target):
            info.update(status="unused", detail=f"its target {w['target']!r} does not match {report.target!r}")
        elif rule.waiver is not None and rule.waiver.get("status") == "active":
            info.update(status="unused", detail="an earlier waiver already covers this rule")
        elif rule.verdict == Verdict.FAIL:
            if expired:
                info.update(status="expired", detail=f"expired on {w['expires']}: the FAIL counts again")
                rule.reason = f"{rule.reason} [waiver expired on {w['expires']}: {w['reason']}]".strip()
                report.notes.append(f"Waiver for {rule.id} expired on {w['expires']}; its FAIL counts again "
                                    f"(waiver reason: {w['reason']}).")
            else:
                info.update(status="active", detail=f"FAIL accepted until {w['expires']}", waived_verdict="FAIL")
                rule.reason = f"waived until {w['expires']}: {w['reason']} (was FAIL: {rule.reason})"
                rule.verdict = Verdict.WAIVED
        elif rule.verdict == Verdict.PASS:
            info.update(status="stale", detail="the rule passes now: remove the waiver")
            report.notes.append(f"Waiver for {rule.id} is stale: the rule passes now; remove the waiver.")
        else:
            why = {
                Verdict.ERROR: "the rule is ERROR (not evaluated); a waiver never hides an ERROR",
                Verdict.WARN: "the rule is WARN, which does not fail the run (a waiver accepts a FAIL, "
                              "e.g. a SHOULD under --strict)",
                Verdict.INFO: "the rule is INFO, which is only reported",
            }.get(rule.verdict, f"the rule was not evaluated in this run ({rule.verdict.value})")
            info.update(status="unused", detail=why)
        if rule is not None and (rule.waiver is None or info["status"] in ("active", "expired")):
            rule.waiver = info
        statuses.append(info)
    report.waivers = statuses
