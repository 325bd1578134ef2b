"""`batchspec matrix`: implementations as columns, rules grouped by class as rows, each one's level;
self-contained HTML and Markdown; reports of different catalogue versions refused (exit 2) unless
--allow-mixed, which shows the difference."""
from __future__ import annotations

import json
import re
from pathlib import Path

from conformance import _catalogue, _levels
from conformance._model import CheckOutcome, RuleResult, RunReport, Verdict
from conformance.cli import main
from conformance.reports import render_json

CLASSES = ["CORE", "HTTP", "PART", "ATOM", "ORD", "SIZE", "IDEM", "ASYNC", "PAR", "ROB", "PERF", "FLEET"]


def _write(path: Path, target: str, overrides: dict[str, Verdict], declared=CLASSES) -> str:
    cat = _catalogue.load()
    rules = []
    for rule in cat.rules:
        v = overrides.get(rule.id, Verdict.PASS)
        checks = [CheckOutcome(nodeid="s::t", name="t", rule_id=rule.id, verdict=v, reason=f"{v.value} here")]
        if rule.id == "PART-02":
            checks.append(CheckOutcome(nodeid="s::u", name="u", rule_id=rule.id, verdict=Verdict.SKIP,
                                       reason="the target upserts"))
        rules.append(RuleResult(id=rule.id, cls=rule.cls, level=rule.level, title=rule.title, rationale="r",
                                seed="s", verdict=v, reason=f"{v.value} here", checks=checks))
    report = RunReport(schema_version="1.1", tool_version="t", target=target, profile="p",
                       started_at="2030-01-01T00:00:00+00:00", finished_at="2030-01-01T00:00:01+00:00",
                       duration_s=1, strict=False, classes_declared=list(declared), rules=rules)
    report.conformance = _levels.assess(cat, rules, declared, {"correlation": "id"})
    report.catalogue = {"version": cat.version}
    path.write_text(render_json(report))
    return str(path)


def test_matrix_of_two_implementations(tmp_path, capsys):
    a = _write(tmp_path / "a.json", "https://a.example", {})
    b = _write(tmp_path / "b.json", "https://b.example", {"IDEM-01": Verdict.FAIL})
    assert main(["matrix", a, b, "-o", str(tmp_path / "m"), "--name", "Alpha", "--name", "Beta"]) == 0
    md = (tmp_path / "m" / "matrix.md").read_text()
    assert "| rule | level | Alpha | Beta |" in md
    assert "| **conformance level** | | **Level 4/4 (Fleet-ready)** | **Level 1/4 (Batch basics)** |" in md
    assert "| IDEM-01 | MUST | PASS | FAIL |" in md
    assert "| PART-02 | MUST | PASS\\* | PASS\\* |" in md
    assert re.search(r"\| \*\*IDEM\*\* \| \| \d+/\d+ MUST \|", md)
    page = (tmp_path / "m" / "matrix.html").read_text()
    assert "Content-Security-Policy" in page and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", page)
    assert page.count("<tr class='cls'") == len(CLASSES)


def test_different_catalogue_versions_are_refused_or_shown(tmp_path, capsys):
    a = _write(tmp_path / "a.json", "https://a.example", {})
    doc = json.loads(Path(a).read_text())
    doc["catalogue"]["version"] = "1999.01.01"
    doc["rules"] = [r for r in doc["rules"] if r["id"] != "FLEET-05"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert main(["matrix", a, str(old), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different rule catalogues" in err[0] and "1999.01.01" in err[0]
    assert "FLEET-05 is not in" in err[0] and "--allow-mixed" in err[0]
    assert main(["matrix", a, str(old), "-o", str(tmp_path / "m"), "--allow-mixed"]) == 0
    md = (tmp_path / "m" / "matrix.md").read_text()
    assert "different rule catalogues" in md and "FLEET-05 is not in" in md
    assert "| FLEET-05 | MUST | PASS | absent |" in md


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for args in (["matrix", str(bad)], ["matrix", str(tmp_path / "missing.json")]):
        assert main(args + ["-o", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("batchspec: ")
    a = _write(tmp_path / "a.json", "https://a.example", {})
    assert main(["matrix", a, "--name", "x", "--name", "y", "-o", str(tmp_path / "m")]) == 2


def test_matrix_html_renders_offline_in_chromium(tmp_path):
    import pytest

    from _chromium import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    pytest.importorskip("websocket", reason="websocket-client (the `test` extra) drives Chromium over DevTools")
    a = _write(tmp_path / "a.json", "https://a.example", {})
    b = _write(tmp_path / "b.json", "https://b.example", {"CORE-01": Verdict.FAIL})
    assert main(["matrix", a, b, "-o", str(tmp_path / "m")]) == 0
    with Browser() as br:
        br.open(tmp_path / "m" / "matrix.html")
        levels = br.eval("[...document.querySelectorAll('td.lvl')].map(td => td.innerText)")
        assert levels == ["Level 4/4 (Fleet-ready)", "Level 0/4"]
        assert br.eval("document.querySelectorAll('#matrix tbody tr').length") > len(_catalogue.load().rules)
        assert not br.exceptions and not br.console_errors
        assert all(u.startswith("file:") for u in br.requests), br.requests


def test_keep_into_and_profile_names(tmp_path, capsys):
    """`--keep` stores each report reduced to what a matrix reads (a valid report.json, no
    exchanges), the matrix of the kept reports is the matrix of the full ones, and `--into` fills
    the marked section of a page (docs/compatibility.md is made this way)."""
    from conformance._schemas import errors

    a = _write(tmp_path / "a.json", "https://a.example", {})
    b = _write(tmp_path / "b.json", "https://b.example", {"CORE-07": Verdict.FAIL}, declared=["CORE", "HTTP"])
    for path, prof in ((a, "profiles/alpha.yaml"), (b, "beta.yaml")):
        doc = json.loads(Path(path).read_text())
        doc["profile"] = prof
        Path(path).write_text(json.dumps(doc))
    page = tmp_path / "page.md"
    page.write_text("# APIs\n\nintro\n\n<!-- batchspec matrix -->\nold\n<!-- /batchspec matrix -->\n\nafter\n")
    kept = tmp_path / "kept"
    assert main(["matrix", a, b, "--keep", str(kept), "--names-from", "profile", "--into", str(page)]) == 0
    assert not (tmp_path / "matrix").exists()  # -o only when asked, or when nothing else is
    assert sorted(p.name for p in kept.iterdir()) == ["alpha.json", "beta.json"]
    for p in kept.iterdir():
        doc = json.loads(p.read_text())
        assert errors("report.schema.json", doc) == [] and all(r["evidence"] == [] for r in doc["rules"])
        assert p.stat().st_size < len(Path(a).read_text())
    text = page.read_text()
    assert text.startswith("# APIs\n\nintro\n\n<!-- batchspec matrix -->\n") and text.endswith(
        "<!-- /batchspec matrix -->\n\nafter\n") and "old" not in text
    assert "| rule | level | alpha | beta |" in text and "| CORE-07 | MUST | PASS | FAIL |" in text
    assert "next level blocked by" in text and "CORE-07 FAIL" in text
    from conformance._matrix import build_matrix, render_matrix_md

    full = render_matrix_md(build_matrix([a, b], names_from="profile"), title=False)
    small = render_matrix_md(build_matrix(sorted(str(p) for p in kept.iterdir()), names_from="profile"), title=False)
    assert full == small and full.strip() in text
    page.write_text("no markers here\n")
    assert main(["matrix", a, "--into", str(page)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "<!-- batchspec matrix -->" in err[-1]
