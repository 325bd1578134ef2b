"""Conformance levels (SPEC 4b): the highest level a run reached and what blocks the next.

A level is reached when the profile declares every class of the level (its own and those below) and
every MUST / MUST NOT rule of those classes PASSes. A SKIP counts as met only where the catalogue
says the rule does not apply to this kind of target (`not_applicable` on the rule, with conditions
on the target that must all hold). Everything else blocks: FAIL, ERROR, WAIVED (a waiver accepts a
deviation, it does not make the rule pass), any other SKIP, PENDING (no check yet), and a class the
profile does not declare.
"""
from __future__ import annotations

from typing import Any, Iterable

from ._catalogue import Catalogue, Rule
from ._model import RuleResult, Verdict


def _applies_not(rule: Rule, target: dict[str, Any]) -> bool:
    """True when the catalogue says this rule does not apply to this kind of target."""
    na = rule.not_applicable
    if not na:
        return False
    return all(target.get(k) == v for k, v in (na.get("when") or {}).items())


def _blocker(r: RuleResult, why: str) -> dict[str, Any]:
    out = {"rule": r.id, "class": r.cls, "verdict": r.verdict.value, "reason": why}
    if r.verdict == Verdict.WAIVED and r.waiver:
        out["waiver"] = {k: r.waiver.get(k) for k in ("reason", "expires") if k in r.waiver}
    return out


def assess(cat: Catalogue, rules: Iterable[RuleResult], classes_declared: Iterable[str],
           target: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"reached", "name", "levels": [{"level", "name", "classes", "reached", "blockers"}], "next"}.

    `target` holds the facts the catalogue's `not_applicable.when` conditions test (`correlation`).
    """
    target = target or {}
    by_id = {r.id: r for r in rules}
    declared = set(classes_declared)
    levels = []
    seen_na: set[str] = set()  # a not-applicable rule is listed at the first level that needs it
    reached = 0
    for lv in cat.levels:
        blockers: list[dict[str, Any]] = []
        not_applicable: list[dict[str, str]] = []
        # A level's own blockers are those of the classes it adds; it is reached only on top of the
        # level below, so the next level's blockers are exactly what stands between the two.
        for cls in lv.adds:
            if cls not in declared:
                blockers.append({"class": cls, "verdict": "SKIP",
                                 "reason": f"class {cls} is not declared by the profile"})
                continue
            musts = [by_id[r.id] for r in cat.by_class(cls) if r.level.startswith("MUST") and r.id in by_id]
            if musts and all(r.verdict == Verdict.SKIP and r.reason.startswith("not selected") for r in musts):
                blockers.append({"class": cls, "verdict": "SKIP",
                                 "reason": f"class {cls} was not run (not selected by --class/--rule)"})
                continue
            for rule in cat.by_class(cls):
                if not rule.level.startswith("MUST"):
                    continue
                r = by_id.get(rule.id)
                if r is None:
                    continue
                if r.verdict == Verdict.PASS:
                    continue
                if r.verdict == Verdict.SKIP and _applies_not(rule, target):
                    not_applicable.append({"rule": rule.id, "because": rule.not_applicable["because"]})
                    continue
                why = r.reason or r.verdict.value
                if r.verdict == Verdict.WAIVED:
                    why = "waived (a waiver holds the level back): " + why
                elif r.verdict == Verdict.PENDING:
                    why = "no check for this rule yet"
                elif r.verdict == Verdict.SKIP:
                    why = "skipped: " + why
                blockers.append(_blocker(r, why))
        ok = not blockers and reached == lv.level - 1
        if ok:
            reached = lv.level
        levels.append({"level": lv.level, "name": lv.name, "classes": list(lv.classes), "adds": list(lv.adds),
                       "reached": ok, "blockers": blockers,
                       "not_applicable": [x for x in not_applicable if x["rule"] not in seen_na]})
        seen_na.update(x["rule"] for x in not_applicable)
    name = next((lv["name"] for lv in levels if lv["level"] == reached), "none")
    nxt = next((lv for lv in levels if lv["level"] == reached + 1), None)
    return {
        "reached": reached,
        "name": name,
        "of": len(levels),
        "levels": levels,
        "next": None if nxt is None else {"level": nxt["level"], "name": nxt["name"], "blockers": nxt["blockers"]},
    }


def headline(conf: dict[str, Any]) -> str:
    """One line: "Level 2 of 4 (Safe retries); level 3 blocked by 2 rules: ASYNC-03 FAIL, ..."."""
    if not conf:
        return ""
    reached = conf.get("reached", 0)
    head = (f"Level {reached} of {conf.get('of', 4)} ({conf.get('name')})" if reached
            else f"No conformance level reached (of {conf.get('of', 4)})")
    nxt = conf.get("next")
    if not nxt:
        return head + ": the highest level"
    b = nxt["blockers"]
    names = ", ".join(f"{x['rule']} {x['verdict']}" if x.get("rule")
                      else f"class {x['class']} " + ("not run" if "not run" in x["reason"] else "not declared")
                      for x in b[:8])
    more = f" and {len(b) - 8} more" if len(b) > 8 else ""
    return f"{head}; level {nxt['level']} ({nxt['name']}) blocked by {len(b)}: {names}{more}"


def parse_level(text: str, cat: Catalogue) -> int:
    """`--fail-under` takes a level number (2) or name ("Safe retries", case-insensitive)."""
    t = str(text).strip()
    if t.isdigit() and any(lv.level == int(t) for lv in cat.levels):
        return int(t)
    for lv in cat.levels:
        if lv.name.lower() == t.lower():
            return lv.level
    known = ", ".join(f"{lv.level} ({lv.name})" for lv in cat.levels)
    raise ValueError(f"unknown conformance level {text!r} (known: {known})")
