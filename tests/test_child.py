"""ROB-01 in a child process (conformance/_child.py): same verdicts, same evidence, and a fallback.

The CLI forks a child process for the check marked `concurrent(process=True)` (ROB-01) so that
its CPU (drawing schemathesis's cases) runs on another core (issue 18). These tests prove that the
child's verdict is the kit's verdict: a FAIL found there reaches the report with its evidence, a
child that cannot run the check hands it back to the kit's process, and the table of such rules
matches the markers.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from conformance import _child
from conformance.cli import main


def _rob01(report_dir: Path) -> dict:
    doc = json.loads((report_dir / "report.json").read_text())
    (rule,) = [r for r in doc["rules"] if r["id"] == "ROB-01"]
    (check,) = rule["checks"]
    return {"rule": rule, "check": check, "notes": doc["notes"]}


def _profile_with_fixed_fuzzing(tmp_path: Path, url: str) -> str:
    """The bundled profile, pointed at `url`, fuzzing a fixed seed bounded by cases (not the clock)."""
    src = Path(__file__).resolve().parent.parent / "conformance" / "profiles" / "reference.yaml"
    data = yaml.safe_load(src.read_text())
    data["target"]["base_url"] = url
    data["rob"] = {"max_examples": 30, "seed": 1, "seconds": 300, "seconds_per_operation": 120}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_a_fail_found_in_the_child_reaches_the_report_with_its_evidence(tmp_path, capsys):
    """The kill matrix's `rob.extra_members_crash` (500 on unknown top-level members), served over
    loopback and checked by the CLI: ROB-01 runs in the child and FAILs there, with the exchange."""
    from mutants import REGISTRY
    from reference_server import create_app
    from reference_server.server import start_in_thread

    (m,) = [m for m in REGISTRY if m.name == "extra_members_crash"]
    server = start_in_thread(app=m.build(create_app(str(tmp_path / "m.db"))))
    try:
        code = main(["run", server.base_url, "--profile", _profile_with_fixed_fuzzing(tmp_path, server.base_url),
                     "--rule", "ROB-01,CORE-01", "--report-dir", str(tmp_path / "r"), "-q"])
    finally:
        server.stop()
    capsys.readouterr()
    got = _rob01(tmp_path / "r")
    assert got["check"]["figures"].get("ran_in", "").startswith("a child process"), got["check"]["figures"]
    assert code == 1 and got["rule"]["verdict"] == "FAIL", got["rule"]["reason"]
    assert any(e["response"] and e["response"]["status"] == 500 and e["curl"] for e in got["rule"]["evidence"])


def test_a_child_that_cannot_run_the_check_hands_it_back(tmp_path, monkeypatch, capsys):
    """A child that dies before it answers: ROB-01 runs in the kit's own process, with the same
    verdict, and the report's notes say so."""
    real_start = _child.Spare.start.__func__

    def broken(cls, warm=None):
        spare = real_start(cls, warm)
        os.kill(spare.pid, signal.SIGKILL)  # gone before the job arrives
        os.waitpid(spare.pid, 0)
        spare.returncode = -9
        return spare

    monkeypatch.setattr(_child.Spare, "start", classmethod(broken))
    code = main(["run", "--rule", "ROB-01,CORE-01", "--report-dir", str(tmp_path / "r"), "-q"])
    capsys.readouterr()
    got = _rob01(tmp_path / "r")
    assert code == 0 and got["rule"]["verdict"] == "PASS", got["rule"]["reason"]
    assert "ran_in" not in got["check"]["figures"]
    assert any("ran in the kit's own process: the child process ended without an answer" in n
               for n in got["notes"]), got["notes"]


@pytest.mark.parametrize("args", [["--concurrency", "1"], ["--exitfirst"], ["--rule", "CORE-01,CORE-02"]])
def test_no_child_is_started_when_no_check_would_run_in_it(args, tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(_child.Spare, "start", classmethod(lambda cls, warm=None: started.append(warm)))
    rules = [] if "--rule" in args else ["--rule", "ROB-01,CORE-01"]
    assert main(["run", *args, *rules, "-q"]) == 0
    capsys.readouterr()
    assert started == []


def test_the_table_of_rules_in_a_child_matches_the_markers():
    """`_child.IN_OWN_PROCESS` (what the CLI starts a child for) names exactly the rules whose check is
    marked `concurrent(process=True)`, and each warm-up names a function that exists."""
    import importlib
    import re

    suites = Path(__file__).resolve().parent.parent / "conformance" / "suites"
    marked = set()
    for path in suites.glob("test_*.py"):
        text = path.read_text()
        for m in re.finditer(r"@pytest\.mark\.concurrent\([^)]*process=True[^)]*\)\s*\n(?:#.*\n)*"
                             r"@pytest\.mark\.rule\(\"([A-Z]+-\d+)\"", text):
            marked.add(m.group(1))
    assert marked == set(_child.IN_OWN_PROCESS)
    for specs in _child.IN_OWN_PROCESS.values():
        for spec in specs:
            module, _, func = spec.partition(":")
            assert callable(getattr(importlib.import_module(module), func))
