"""The kill matrix over foreign envelopes: fixture batch APIs that do not speak the canonical shape.

Each fixture in tests/foreign/ is a small server with its own profile, written from its docstring
and docs/any-target.md only. Its planted defects (BUGS: defect -> the rule it breaks) must each be
caught through the profile's mapping, its legal variations (VARIATIONS) must flag no MUST, and the
correct server must pass every rule it is judged on. Rows join the printed kill matrix as
`<envelope>.<defect>`.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import conformance
from conformance import ASGIThreadTransport, Verdict, load_profile
from conftest import record_matrix_row

HERE = Path(__file__).resolve().parent / "foreign"
ENVELOPES = ["tally_rpc", "beacon_events", "shelf_kv"]


def _run(name: str, bugs: frozenset[str] = frozenset(), rules: list[str] | None = None) -> conformance.RunReport:
    mod = importlib.import_module(f"foreign.{name}")
    transport = ASGIThreadTransport(mod.create_app(bugs))
    try:
        return conformance.run(load_profile(HERE / f"{name}.yaml"), transport=transport, rules=rules)
    finally:
        transport.close()


def _cases(kind: str) -> list[tuple[str, str, str]]:
    out = []
    for name in ENVELOPES:
        mod = importlib.import_module(f"foreign.{name}")
        table = mod.BUGS if kind == "bug" else mod.VARIATIONS
        out += [(name, bug, rule) for bug, rule in table.items()]
    return out


@pytest.mark.parametrize("name", ENVELOPES)
def test_correct_foreign_server_passes(name):
    report = _run(name)
    bad = {r.id: (r.verdict.value, r.reason) for r in report.rules if r.verdict not in (Verdict.PASS, Verdict.SKIP)}
    record_matrix_row({"mutant": f"{name}.(correct server)", "rule": "", "verdict": "no MUST fails" if not bad
                       else "flagged", "other_fails": sorted(bad), "caught": not bad})
    assert not bad, bad


@pytest.mark.parametrize("name, bug, rule", _cases("bug"), ids=lambda v: str(v))
def test_foreign_defect_is_caught(name, bug, rule):
    report = _run(name, frozenset({bug}), rules=[rule])
    got = {r.id: r for r in report.rules}[rule]
    caught = got.verdict == Verdict.FAIL
    record_matrix_row({"mutant": f"{name}.{bug}", "rule": rule, "verdict": got.verdict.value, "other_fails": [],
                       "caught": caught})
    assert caught, f"{name}.{bug}: {rule} is {got.verdict.value}: {got.reason}"


@pytest.mark.parametrize("name, variation, what", _cases("variation"), ids=lambda v: str(v))
def test_foreign_legal_variation_is_not_flagged(name, variation, what):
    report = _run(name, frozenset({variation}))
    flagged = sorted(r.id for r in report.rules if r.verdict == Verdict.ERROR
                     or (r.verdict == Verdict.FAIL and r.level.startswith("MUST")))
    record_matrix_row({"mutant": f"{name}.{variation}", "rule": "(legal variation)",
                       "verdict": "no MUST fails" if not flagged else "flagged", "other_fails": flagged,
                       "caught": not flagged})
    assert not flagged, {r.id: r.reason for r in report.rules if r.id in flagged}


def test_numeric_codes_are_machine_readable_codes_compared_by_value():
    """Regression: CORE-04 warned about a numeric code that PART-03 accepted in the same run."""
    report = _run("tally_rpc", rules=["CORE-04", "PART-03", "SIZE-01", "CORE-07"])
    got = {r.id: r for r in report.rules}
    for rid in ("CORE-04", "PART-03", "SIZE-01", "CORE-07"):
        assert got[rid].verdict == Verdict.PASS, (rid, got[rid].verdict, got[rid].reason)


DEFECT_KINDS = ["dropped result", "invented result", "fake ok", "phantom reads", "unenforced limit",
                "one bad item refuses the batch", "valid items written behind a 4xx", "wrong failure count",
                "crash on a hostile body"]


@pytest.mark.parametrize("name", ENVELOPES)
def test_every_defect_kind_is_planted_where_the_shape_allows(name):
    """Issue 13: each fixture plants every kind of defect that applies to its shape, or says why not."""
    mod = importlib.import_module(f"foreign.{name}")
    assert sorted(mod.COVERS) == sorted(DEFECT_KINDS)
    for kind, bug in mod.COVERS.items():
        assert bug.startswith("n/a: ") or bug in mod.BUGS, (name, kind, bug)
