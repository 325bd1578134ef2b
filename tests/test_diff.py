"""`batchspec diff OLD.json NEW.json`: regressions, improvements and changes; exit 1 on a regression,
2 with one line on stderr for input that is not a report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import cli
from conformance._diff import compare
from conftest import run_kit
from _two_failures import BROKEN, run_two_failures


def _doc(**verdicts: str) -> dict:
    rules = [{"id": rid.replace("_", "-"), "class": rid.split("_")[0], "level": "MUST", "title": f"title of {rid}",
              "verdict": v, "reason": f"{v} because", "evidence": []} for rid, v in verdicts.items()]
    counts = {v: 0 for v in ("PASS", "FAIL", "WARN", "INFO", "ERROR", "SKIP", "PENDING", "WAIVED")}
    for r in rules:
        counts[r["verdict"]] += 1
    return {"schema_version": "1.0", "target": "http://t.test", "profile": "p", "started_at": "2030-01-01T00:00:00Z",
            "strict": False, "summary": {"counts": counts, "exit_code": 0}, "rules": rules}


@pytest.mark.parametrize("old, new, kind", [
    ("PASS", "FAIL", "regressed"), ("PASS", "WARN", "regressed"), ("WARN", "FAIL", "regressed"),
    ("PASS", "ERROR", "regressed"), ("FAIL", "ERROR", "regressed"), ("SKIP", "ERROR", "regressed"),
    ("PENDING", "FAIL", "regressed"), ("PASS", "WAIVED", "regressed"),
    ("FAIL", "PASS", "improved"), ("ERROR", "FAIL", "improved"), ("WARN", "PASS", "improved"),
    ("WAIVED", "PASS", "improved"),
    ("FAIL", "WAIVED", "changed"), ("WAIVED", "FAIL", "changed"), ("PASS", "SKIP", "lost_coverage"),
    ("PASS", "PENDING", "lost_coverage"),
    ("FAIL", "SKIP", "changed"), ("PENDING", "PASS", "changed"), ("PASS", "INFO", "changed"),
])
def test_transition_kinds(old, new, kind):
    d = compare(_doc(CORE_01=old), _doc(CORE_01=new))
    assert [r["id"] for r in d[kind]] == ["CORE-01"]
    assert sum(len(d[k]) for k in ("regressed", "improved", "changed", "lost_coverage")) == 1
    assert d["regression"] is (kind in ("regressed", "lost_coverage"))


def test_lost_must_coverage_is_a_regression_unless_allowed(tmp_path, capsys):
    old, new = _doc(CORE_01="PASS", CORE_02="PASS"), _doc(CORE_01="PASS")  # CORE-02 left the report
    new["rules"].append({**old["rules"][1], "verdict": "SKIP"})
    assert [r["id"] for r in compare(old, new)["lost_coverage"]] == ["CORE-02"]
    assert compare(old, new)["regression"] and not compare(old, new, allow_lost_coverage=True)["regression"]
    gone = _doc(CORE_01="PASS")
    assert [r["id"] for r in compare(old, gone)["lost_coverage"]] == ["CORE-02"]
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(new))
    assert cli.main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "Lost coverage" in capsys.readouterr().out
    assert cli.main(["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--allow-lost-coverage"]) == 0
    assert "allowed" in capsys.readouterr().out


def test_a_should_going_from_pass_to_skip_is_only_a_change():
    old, new = _doc(CORE_01="PASS"), _doc(CORE_01="SKIP")
    old["rules"][0]["level"] = new["rules"][0]["level"] = "SHOULD"
    d = compare(old, new)
    assert [r["id"] for r in d["changed"]] == ["CORE-01"] and not d["regression"]


def test_unchanged_and_added_removed_rules():
    d = compare(_doc(CORE_01="PASS", CORE_02="FAIL"), _doc(CORE_01="PASS", CORE_03="FAIL"))
    assert [r["id"] for r in d["regressed"]] == ["CORE-03"]  # new in the catalogue and failing
    assert [r["id"] for r in d["changed"]] == ["CORE-02"]  # gone from the new report
    assert d["changed"][0]["new"] is None


def test_different_targets_are_noted():
    new = _doc(CORE_01="PASS") | {"target": "http://other.test"}
    assert any("different targets" in n for n in compare(_doc(CORE_01="PASS"), new)["notes"])


# -- the command, on real reports ------------------------------------------------

@pytest.fixture(scope="module")
def two_reports(tmp_path_factory) -> tuple[Path, Path]:
    from reference_server import create_app

    tmp = tmp_path_factory.mktemp("diff")
    run_kit(create_app(str(tmp / "ref.db")), classes=["CORE"], report_dir=str(tmp / "ref"))
    run_two_failures(tmp, None, tmp / "broken")
    return tmp / "ref" / "report.json", tmp / "broken" / "report.json"


def test_regression_exits_1_with_a_pr_comment(two_reports, capsys):
    ref, broken = two_reports
    assert cli.main(["diff", str(ref), str(broken)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### batchspec diff") and "2 regressions" in out and "#### Regressions" in out
    for rid in BROKEN:
        assert f"| {rid} | MUST | PASS | **FAIL** |" in out


def test_improvement_exits_0(two_reports, capsys):
    ref, broken = two_reports
    assert cli.main(["diff", str(broken), str(ref), "--format", "text"]) == 0
    out = capsys.readouterr().out
    assert "0 regressed, 2 improved" in out and "improved  CORE-07" in out


def test_same_report_exits_0_json(two_reports, capsys):
    ref, _ = two_reports
    assert cli.main(["diff", str(ref), str(ref), "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["regression"] is False and d["regressed"] == d["improved"] == d["changed"] == []


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('{"hello": "world"}', "not a batchspec report"),
    ('[1, 2]', "not a batchspec report"),
    ('{"schema_version": "2.0", "rules": []}', "not supported"),
    ('{"schema_version": "1.0", "rules": [{"id": "CORE-01", "verdict": "GREAT"}]}', "known verdict"),
])
def test_bad_input_exits_2_with_one_line(two_reports, tmp_path, capsys, content, message):
    ref, _ = two_reports
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert cli.main(["diff", str(ref), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and str(bad) in captured.err
