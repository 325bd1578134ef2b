"""Conformance levels (SPEC 4b) and partial observation (issue 14) in every report format.

Levels are data in the catalogue; the assessment reaches a level only when every MUST of its classes
PASSes, a SKIP counting only where the catalogue says the rule does not apply to the kind of target.
A rule that passed with a skipped check, or with a state its check did not observe, shows it beside
its PASS in report.json, report.md, summary.md, junit.xml and report.html.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import _catalogue, _levels
from conformance._model import CheckOutcome, RuleResult, RunReport, Verdict
from conformance._schemas import errors as schema_errors
from conformance.reports import render_html, render_json, render_junit, render_markdown, render_short

SPEC = next((p for p in (Path(__file__).resolve().parents[i] / "shared" / "SPEC.md" for i in (2, 3)) if p.exists()),
            Path("/nonexistent"))
ALL = ["CORE", "HTTP", "PART", "ATOM", "ORD", "SIZE", "IDEM", "ASYNC", "PAR", "ROB", "PERF", "FLEET"]


def _check(rule_id: str, verdict: Verdict, name: str = "test_a", reason: str = "", observed=()) -> CheckOutcome:
    return CheckOutcome(nodeid=f"s::{name}", name=name, rule_id=rule_id, verdict=verdict, reason=reason,
                        observed=list(observed))


def _results(overrides: dict[str, RuleResult | Verdict] | None = None) -> list[RuleResult]:
    """Every catalogue rule PASSing with one check, except the overrides."""
    out = []
    for rule in _catalogue.load().rules:
        o = (overrides or {}).get(rule.id, Verdict.PASS)
        if isinstance(o, RuleResult):
            out.append(o)
            continue
        out.append(RuleResult(id=rule.id, cls=rule.cls, level=rule.level, title=rule.title, rationale="r",
                              seed="s", verdict=o, reason=f"{o.value} reason",
                              checks=[_check(rule.id, o, reason=f"{o.value} reason")]))
    return out


def _assess(overrides=None, declared=ALL, correlation="id", item_ids="present", results="all"):
    return _levels.assess(_catalogue.load(), _results(overrides), declared,
                          {"correlation": correlation, "item_ids": item_ids, "results": results})


def test_levels_are_data_in_the_catalogue_and_validate():
    cat = _catalogue.load()
    assert [lv.level for lv in cat.levels] == [1, 2, 3, 4]
    assert cat.levels[0].classes == ("CORE", "HTTP", "SIZE")
    assert set(cat.levels[3].classes) == {"CORE", "HTTP", "SIZE", "PART", "IDEM", "ASYNC", "ATOM", "ORD", "PAR",
                                          "ROB", "FLEET"}
    assert cat.version
    assert schema_errors("catalogue.schema.json", _catalogue.raw()) == []


@pytest.mark.skipif(not SPEC.exists(), reason="../shared/SPEC.md is not beside this checkout")
def test_levels_match_the_spec():
    text = SPEC.read_text()
    spec = re.findall(r'^- Level (\d) "([^"]+)": (.*)\.$', text, re.M)
    cat = _catalogue.load()
    assert [(int(n), name) for n, name, _ in spec] == [(lv.level, lv.name) for lv in cat.levels]
    for (_, _, classes), lv in zip(spec, cat.levels):
        named = set(re.findall(r"\b[A-Z]{2,}\b", classes))
        assert named == set(lv.adds), (lv.level, named)


def test_every_rule_passing_reaches_the_top_level():
    conf = _assess()
    assert conf["reached"] == 4 and conf["next"] is None
    assert _levels.headline(conf).startswith("Level 4 of 4 (Fleet-ready)")


@pytest.mark.parametrize("verdict", [Verdict.FAIL, Verdict.ERROR, Verdict.WAIVED, Verdict.PENDING, Verdict.SKIP])
def test_anything_but_pass_of_a_must_blocks_its_level(verdict):
    conf = _assess({"IDEM-01": verdict})
    assert conf["reached"] == 1
    assert [b["rule"] for b in conf["next"]["blockers"]] == ["IDEM-01"]
    assert conf["next"]["blockers"][0]["verdict"] == verdict.value
    assert "IDEM-01" in _levels.headline(conf)


def test_a_waiver_is_named_as_holding_the_level_back():
    conf = _assess({"CORE-01": Verdict.WAIVED})
    assert conf["reached"] == 0 and "waived" in conf["next"]["blockers"][0]["reason"]


def test_a_failing_should_does_not_block():
    should = next(r.id for r in _catalogue.load().rules if r.level == "SHOULD" and r.cls == "CORE")
    assert _assess({should: Verdict.WARN})["reached"] == 4


def test_a_class_not_declared_blocks_its_level_and_those_above():
    conf = _assess(declared=[c for c in ALL if c != "IDEM"])
    assert conf["reached"] == 1
    assert conf["next"]["blockers"] == [{"class": "IDEM", "verdict": "SKIP",
                                         "reason": "class IDEM is not declared by the profile"}]
    assert not conf["levels"][2]["reached"]  # level 3 passes its own rules but sits on level 2


def test_a_skip_counts_only_where_the_rule_does_not_apply_to_the_target():
    # CORE-09 binds position-correlated targets only: its SKIP counts for an id-correlated target ...
    conf = _assess({"CORE-09": Verdict.SKIP}, correlation="id")
    assert conf["reached"] == 4
    assert conf["levels"][0]["not_applicable"][0]["rule"] == "CORE-09"
    # ... and blocks a position-correlated one, where the rule applies and was not judged.
    conf = _assess({"CORE-09": Verdict.SKIP}, correlation="position")
    assert conf["reached"] == 0 and conf["next"]["blockers"][0]["rule"] == "CORE-09"


def test_core07_skip_counts_only_for_items_without_ids():
    # Entries without ids (events, messages) have no id to duplicate: CORE-07 does not apply ...
    conf = _assess({"CORE-07": Verdict.SKIP}, correlation="position", item_ids="absent")
    assert conf["reached"] == 4, conf["next"]
    # ... but where items carry ids, a skipped CORE-07 is a rule not judged, and blocks level 1.
    conf = _assess({"CORE-07": Verdict.SKIP}, correlation="position", item_ids="present")
    assert conf["reached"] == 0 and conf["next"]["blockers"][0]["rule"] == "CORE-07"


def test_par01_skip_counts_only_for_failure_only_answers():
    # A failure-only answer has no data for an ok item: PAR-01 does not apply ...
    conf = _assess({"PAR-01": Verdict.SKIP}, results="failures_only")
    assert conf["reached"] == 4, conf["next"]
    # ... but where every item has a result, a skipped PAR-01 was not judged, and blocks level 3.
    conf = _assess({"PAR-01": Verdict.SKIP})
    assert conf["reached"] == 2 and conf["next"]["blockers"][0]["rule"] == "PAR-01"


def test_parse_level_by_number_or_name():
    cat = _catalogue.load()
    assert _levels.parse_level("2", cat) == 2
    assert _levels.parse_level("safe retries", cat) == 2
    with pytest.raises(ValueError, match="known: 1 \\(Batch basics\\)"):
        _levels.parse_level("9", cat)


# -- partial observation in every format -------------------------------------------------------

def _partial_report() -> RunReport:
    part = RuleResult(
        id="PART-02", cls="PART", level="MUST", title="failed items leave no trace", rationale="r", seed="s",
        verdict=Verdict.PASS, reason="",
        checks=[_check("PART-02", Verdict.PASS, "test_one"), _check("PART-02", Verdict.PASS, "test_two"),
                _check("PART-02", Verdict.SKIP, "test_three", "the target upserts")])
    part.reason = part.qualifier()
    unobserved = RuleResult(
        id="ASYNC-03", cls="ASYNC", level="MUST", title="progress is monotonic", rationale="r", seed="s",
        verdict=Verdict.PASS, reason="",
        checks=[_check("ASYNC-03", Verdict.PASS, "test_progress",
                       observed=["in-progress behaviour: every job finished before the first poll"])])
    unobserved.reason = unobserved.qualifier()
    rules = _results({"PART-02": part, "ASYNC-03": unobserved})
    report = RunReport(schema_version="1.1", tool_version="t", target="http://t.test", profile="p",
                       started_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:00:01+00:00",
                       duration_s=1, strict=False, classes_declared=ALL, rules=rules)
    report.conformance = _levels.assess(_catalogue.load(), rules, ALL, {"correlation": "id"})
    report.catalogue = {"version": _catalogue.load().version}
    return report


LABEL = "PASS (2 of 3 checks; 1 skipped: the target upserts)"
NOT_OBSERVED = "not observed: in-progress behaviour: every job finished before the first poll"


def test_label_says_what_a_pass_rests_on():
    r = next(r for r in _partial_report().rules if r.id == "PART-02")
    assert r.partial and r.label() == LABEL


def test_report_json_has_per_check_verdicts_observed_notes_and_counts():
    doc = json.loads(render_json(_partial_report()))
    assert schema_errors("report.schema.json", doc) == []
    part = next(r for r in doc["rules"] if r["id"] == "PART-02")
    assert part["label"] == LABEL and part["partial"] is True and part["checks_run"] == 2
    assert part["checks_skipped"] == [{"name": "test_three", "reason": "the target upserts"}]
    assert [c["verdict"] for c in part["checks"]] == ["PASS", "PASS", "SKIP"]
    asy = next(r for r in doc["rules"] if r["id"] == "ASYNC-03")
    assert asy["checks"][0]["observed"] == ["in-progress behaviour: every job finished before the first poll"]
    assert asy["not_observed"] and asy["partial"]
    assert doc["summary"]["passed_partially"] == 2 and doc["summary"]["passed_with_skipped_checks"] == 1
    assert doc["conformance"]["reached"] == 4 and doc["summary"]["level"] == 4
    assert doc["catalogue"]["version"] == _catalogue.load().version


def test_markdown_summary_junit_and_html_show_the_skip_beside_the_pass():
    report = _partial_report()
    md = render_markdown(report)
    assert f"| PART-02 | MUST | {LABEL} |" in md
    assert NOT_OBSERVED in md and "## Conformance level" in md and "Level 4 of 4" in md
    short = render_short(report)
    assert LABEL in short and "Level 4 of 4" in short
    root = ET.fromstring(render_junit(report).encode())
    case = next(c for c in root.iter("testcase") if c.get("name").startswith("PART-02"))
    assert LABEL in case.find("system-out").text
    assert root.find("testsuite/properties/property[@name='batchspec.level']").get("value") == "4"
    page = render_html(report)
    assert "2 of 3 checks; 1 skipped: the target upserts" in page and "Level 4/4" in page
    assert "not observed: in-progress behaviour" in page


def test_observed_and_series_attach_to_the_running_check():
    import os

    from conformance.checks import observed, observed_notes, series, series_of

    me = os.environ["PYTEST_CURRENT_TEST"].rsplit(" (", 1)[0]
    observed("no job was seen running")
    observed("no job was seen running")
    series("progress", [(0, 0), (0.5, 40), (1.0, 100)], x="s", y="% done")
    assert observed_notes(me) == ["no job was seen running"]
    assert series_of(me)[0]["points"] == [[0.0, 0.0], [0.5, 40.0], [1.0, 100.0]]
    assert observed_notes(me) == [] and series_of(me) == []
