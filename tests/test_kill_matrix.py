"""Every mutant of the reference server is caught by the check it targets; legal variations are not flagged.

A mutant counts as caught only if the check it names (`@mutant(..., check=...)`) FAILs (WARN for a
SHOULD clause), no other MUST rule FAILs except its declared `also` rules (each of which must really
FAIL, or the exemption is stale), and no rule is an ERROR except its declared `errors` rules: those
whose checks it leaves no way to set up (SPEC §5: a setup failure is an ERROR). Whether each of them
errs can depend on timing (a grown job is paged or not), so only "at least one of them is an ERROR"
is asserted against staleness. A legal variation makes no MUST FAIL, no
ERROR, and WARNs only on the SHOULD rules it lists (`warns`).

Which classes run: by default a mutant's own class plus CORE (a fast inner loop; `also`, `may_also`
and `errors` rules are judged where their class ran). With BATCHSPEC_KILL_MATRIX=full (a step of
every CI run, .ci/run) every mutant runs with every class its profile declares, so "no other MUST
fails" is a global claim and every exemption is checked (docs/kill-matrix.md: what each means).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conformance import Verdict, load_catalogue
from conftest import record_matrix_row, run_kit, run_kit_socket
from mutants import REGISTRY

CAUGHT_AS = {"MUST": {Verdict.FAIL}, "MUST NOT": {Verdict.FAIL}, "SHOULD": {Verdict.WARN, Verdict.FAIL},
             "MAY": {Verdict.INFO}}
FULL = os.environ.get("BATCHSPEC_KILL_MATRIX", "").lower() == "full"
# In the full matrix the fuzzing and hostile-corpus checks run for every mutant: bounded to a few
# cases and a fixed seed, unless the mutant's own profile says otherwise (ROB mutants do).
FULL_OVERRIDES = {"rob": {"max_examples": 3, "other_max_examples": 2, "seconds_per_operation": 1, "seconds": 2, "seed": 1}}
SUITES = Path(__file__).resolve().parent.parent / "conformance" / "suites"
# Rules whose MUST clauses cannot be broken over HTTP in one process: checked by their own tests.
NO_MUTANT_NEEDED = {"ASYNC-11": "tests/test_async_restart.py (SIGKILL mid-job, restart)",
                    "FLEET-05": "the fleet's restart tests"}
# Classes whose mutants have not landed yet (none: FLEET's landed with the fleet work).
PENDING_CLASSES: set[str] = set()


def _label(m) -> str:
    """class module + function name: unique even where two modules name a mutant alike."""
    return f"{m.build.__module__.rsplit('.', 1)[-1].rstrip('_')}.{m.name}"


def _classes(m) -> list[str]:
    cat = load_catalogue()
    classes = set(m.classes) | {"CORE"} | ({cat.get(m.rule).cls} if m.rule else set())
    if FULL:
        # Every class the mutant's profile declares (the reference profile's, plus FLEET where the
        # mutant lists instances), and its own ones.
        from conftest import reference_profile

        return sorted(classes | set(reference_profile(overrides=m.profile).classes))
    # The inner loop stays fast: the classes of `also`/`errors` rules are not added (a cascade can
    # span every class, and ROB fuzzes); those rules are judged where their class ran, and in full.
    return sorted(classes)


def _overrides(m) -> dict:
    if not FULL:
        return m.profile
    from conftest import deep_merge

    return deep_merge(FULL_OVERRIDES, m.profile)


def _check_of(rule, name: str):
    return [c for c in rule.checks if c.name == name or c.name.startswith(name + "[")]


@pytest.mark.parametrize("m", REGISTRY, ids=lambda m: _label(m))
def test_mutant_is_caught(m, tmp_path):
    from reference_server import create_app

    app = m.build(create_app(str(tmp_path / "m.db")))
    runner = run_kit_socket if m.socket else run_kit
    classes = _classes(m)
    report = runner(app, classes=classes, overrides=_overrides(m))
    by_id = {r.id: r for r in report.rules}
    other = sorted(r.id for r in report.rules
                   if r.verdict == Verdict.FAIL and r.level.startswith("MUST") and r.id != m.rule and r.id not in m.also
                   and r.id not in m.may_also)
    errors = sorted(f"{r.id} ({r.reason[:120]})" for r in report.rules
                    if r.verdict == Verdict.ERROR and r.id not in m.errors and r.id not in m.may_also)
    ran = {r.id for r in report.rules if r.cls in classes}
    stale = sorted(rid for rid in m.also if rid in ran and by_id[rid].verdict != Verdict.FAIL)
    errs_ran = [rid for rid in m.errors if rid in ran]
    if errs_ran and not any(by_id[rid].verdict == Verdict.ERROR for rid in errs_ran):
        stale.append(f"none of {errs_ran} was an ERROR")
    if m.variation:
        warned = sorted(r.id for r in report.rules if r.verdict == Verdict.WARN and r.id not in m.warns)
        caught = not other and not errors and not warned
        verdict = "no MUST fails" if caught else "flagged"
    else:
        rule = by_id[m.rule]
        wanted = CAUGHT_AS[m.level or rule.level]
        named = _check_of(rule, m.check or "")
        caught = bool(named) and any(c.verdict in wanted for c in named) and not other and not errors and not stale
        verdict = rule.verdict.value
        warned = []
    record_matrix_row({"mutant": _label(m), "rule": m.rule, "verdict": verdict, "other_fails": other + errors,
                       "caught": caught})
    assert not errors, f"{m.name}: ERROR where a verdict was due: {errors}"
    if m.variation:
        assert not other, f"legal variation {m.name} flagged: {[(i, by_id[i].reason) for i in other]}"
        assert not warned, (f"legal variation {m.name} made SHOULD rules WARN that it does not list in `warns`: "
                            f"{[(i, by_id[i].reason) for i in warned]}")
        return
    assert m.check, f"mutant {m.name} names no check (@mutant(..., check='test_...'))"
    assert named, f"mutant {m.name}: {m.rule} has no check named {m.check} in this run ({[c.name for c in rule.checks]})"
    assert any(c.verdict in wanted for c in named), (
        f"mutant {m.name} ({m.description}) not caught by {m.check}: "
        f"{[(c.verdict.value, c.reason) for c in named]}; {m.rule} is {rule.verdict.value}: {rule.reason}")
    assert not other, f"mutant {m.name} also fails other MUST rules: {[(i, by_id[i].reason) for i in other]}"
    assert not stale, f"mutant {m.name} declares `also` rules that did not FAIL (stale exemption): {stale}"


def _checks_by_rule() -> dict[str, set[str]]:
    """Every check in the suites, by the rule on its marker (read from the source, no run needed)."""
    out: dict[str, set[str]] = {}
    pattern = re.compile(r'@pytest\.mark\.rule\(\s*"([A-Z]+-\d+)"(?:.|\n)*?\ndef (test_\w+)')
    for f in SUITES.glob("test_*.py"):
        for rid, name in pattern.findall(f.read_text()):
            out.setdefault(rid, set()).add(name)
    return out


def test_every_must_rule_has_a_mutant():
    """SPEC §4: every MUST (and MUST NOT) rule is broken by at least one mutant that its check catches."""
    cat = load_catalogue()
    covered = {m.rule for m in REGISTRY if not m.variation}
    missing = sorted(r.id for r in cat.rules if r.level.startswith("MUST") and r.id not in covered
                     and r.id not in NO_MUTANT_NEEDED and r.cls not in PENDING_CLASSES)
    assert not missing, f"MUST rules with no mutant: {missing}"


def test_every_mutant_names_an_existing_check_of_its_rule():
    checks = _checks_by_rule()
    wrong = [(_label(m), m.rule, m.check) for m in REGISTRY
             if not m.variation and (not m.check or m.check not in checks.get(m.rule, set()))]
    assert not wrong, f"mutants naming no check, or a check not marked with their rule: {wrong}"


def test_every_clause_of_a_must_rule_has_a_mutant():
    """Each check carries one clause of its rule (`clause=` on its marker): every check of a MUST rule
    is the named target of at least one mutant, so every clause the kit observes is proven to fail."""
    cat = load_catalogue()
    named = {(m.rule, m.check) for m in REGISTRY if not m.variation}
    missing = sorted(f"{rid} {name}" for rid, names in _checks_by_rule().items() for name in names
                     if cat.get(rid).level.startswith("MUST") and rid not in NO_MUTANT_NEEDED
                     and cat.get(rid).cls not in PENDING_CLASSES and (rid, name) not in named)
    assert not missing, f"checks of MUST rules that no mutant targets: {missing}"
