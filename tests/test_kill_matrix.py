"""Every mutant of the reference server is caught by the rule it breaks; legal variations are not flagged."""
from __future__ import annotations

import pytest

from conformance import Verdict, load_catalogue
from conftest import record_matrix_row, run_kit, run_kit_socket
from mutants import REGISTRY

CAUGHT_AS = {"MUST": {Verdict.FAIL}, "MUST NOT": {Verdict.FAIL}, "SHOULD": {Verdict.WARN, Verdict.FAIL},
             "MAY": {Verdict.INFO}}


def _label(m) -> str:
    """class module + function name: unique even where two modules name a mutant alike."""
    return f"{m.build.__module__.rsplit('.', 1)[-1].rstrip('_')}.{m.name}"


def _classes(m) -> list[str]:
    cat = load_catalogue()
    classes = set(m.classes) | {"CORE"}
    if m.rule:
        classes.add(cat.get(m.rule).cls)
    return sorted(classes)


@pytest.mark.parametrize("m", REGISTRY, ids=lambda m: _label(m))
def test_mutant_is_caught(m, tmp_path):
    from reference_server import create_app

    app = m.build(create_app(str(tmp_path / "m.db")))
    runner = run_kit_socket if m.socket else run_kit
    report = runner(app, classes=_classes(m), overrides=m.profile)
    by_id = {r.id: r for r in report.rules}
    other = sorted(r.id for r in report.rules
                   if r.verdict == Verdict.FAIL and r.level.startswith("MUST") and r.id != m.rule and r.id not in m.also)
    errors = sorted(r.id for r in report.rules if r.verdict == Verdict.ERROR)
    if m.variation:
        caught = not other and not errors
        verdict = "no MUST fails" if caught else "flagged"
    else:
        rule = by_id[m.rule]
        caught = rule.verdict in CAUGHT_AS[m.level or rule.level] and not other
        verdict = rule.verdict.value
    record_matrix_row({"mutant": _label(m), "rule": m.rule, "verdict": verdict, "other_fails": other + errors,
                       "caught": caught})
    if m.variation:
        assert not other, f"legal variation {m.name} flagged: {[(i, by_id[i].reason) for i in other]}"
        assert not errors, f"legal variation {m.name} gave ERROR: {[(i, by_id[i].reason) for i in errors]}"
        return
    rule = by_id[m.rule]
    assert rule.verdict in CAUGHT_AS[m.level or rule.level], (
        f"mutant {m.name} ({m.description}) not caught: {m.rule} is {rule.verdict.value}: {rule.reason}")
    assert not other, f"mutant {m.name} also fails other MUST rules: {[(i, by_id[i].reason) for i in other]}"
