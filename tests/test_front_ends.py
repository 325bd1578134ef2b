"""Issue 15: the CLI and the pytest front end behave like the tools people know."""
from __future__ import annotations

import ast
import re
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable  # the venv's python: batchspec is installed in it


def cli(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "conformance", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, **kw)


# -- no behaviour installed into other projects' pytest sessions ----------------

def test_a_project_with_its_own_target_profile_and_items_runs_green_with_batchspec_installed(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import pytest

        def pytest_addoption(parser):
            parser.addoption("--target", default="mine")
            parser.addoption("--profile", default="fast")
            parser.addoption("--class", dest="klass", default="k")
            parser.addoption("--rule", default="r")
            parser.addoption("--report-dir", default="rd")
            parser.addoption("--waivers", default="w")

        @pytest.fixture
        def target(request):
            return request.config.getoption("--target")

        @pytest.fixture
        def profile(request):
            return request.config.getoption("--profile")

        @pytest.fixture
        def items():
            return [1, 2, 3]
    '''))
    (tmp_path / "test_own.py").write_text(textwrap.dedent('''
        def test_own_fixtures(target, profile, items):
            assert (target, profile, items) == ("theirs", "fast", [1, 2, 3])

        def test_no_batchspec_plugin(pytestconfig):
            assert not pytestconfig.pluginmanager.has_plugin("conformance.plugin")
            assert not pytestconfig.pluginmanager.has_plugin("batchspec")
    '''))
    r = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--target", "theirs"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 passed" in r.stdout


def test_the_engine_and_the_plugin_do_not_import_each_other():
    tree = ast.parse((ROOT / "conformance" / "_engine.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
            imported.update(f"{'.' * node.level}{node.module or ''}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {m for m in imported if m.endswith("plugin") or m == "conformance.plugin"}, imported


def test_plain_pytest_without_the_plugin_says_how_to_load_it(tmp_path):
    r = subprocess.run([PY, "-m", "pytest", "--pyargs", "conformance", "--co", "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "-p conformance.plugin" in r.stdout + r.stderr


# -- selections that run nothing fail ------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--class", "CORE", "--rule", "IDEM-01"], "IDEM-01 is in class IDEM"),
    (["--class", "NOPE"], "unknown class 'NOPE'"),
    (["--rule", "CORE-01,NOPE-9"], "unknown rule 'NOPE-9'"),
    (["--class", "FLEET"], "leaves no rule to run"),
])
def test_cli_selection_that_runs_nothing_exits_2_with_one_line(args, says, tmp_path):
    r = cli("run", *args, "--report-dir", str(tmp_path / "r"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "started the embedded" not in r.stdout  # checked before anything starts


@pytest.mark.parametrize("args, says", [
    (["--class", "NOPE"], "unknown class 'NOPE'"),
    (["--class", "CORE", "--rule", "IDEM-01"], "leaves no rule to run"),
])
def test_plain_pytest_selection_that_runs_nothing_exits_2(args, says, tmp_path):
    r = subprocess.run([PY, "-m", "pytest", "-p", "conformance.plugin", "--pyargs", "conformance",
                        "--target", "http://127.0.0.1:9", *args, "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert says in r.stdout + r.stderr


def test_plain_pytest_takes_comma_lists_and_repeats(tmp_path):
    from reference_server import start_in_thread

    with start_in_thread(db_path=str(tmp_path / "ref.db")) as server:
        r = subprocess.run([PY, "-m", "pytest", "-p", "conformance.plugin", "--pyargs", "conformance",
                            "-p", "no:xdist", "--target", server.base_url, "--class", "CORE,HTTP", "--class", "IDEM",
                            "--rule", "CORE-01,HTTP-01", "--rule", "IDEM-01",
                            "--report-dir", str(tmp_path / "r"), "-q"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    ran = {x["id"] for x in report["rules"] if x["verdict"] not in ("SKIP", "PENDING")}
    assert ran == {"CORE-01", "HTTP-01", "IDEM-01"}, ran


# -- interrupted runs ------------------------------------------------------------

def _interrupt(tmp_path: Path, sig: int) -> tuple[subprocess.CompletedProcess, Path]:
    import re
    import time

    out = tmp_path / "r"
    proc = subprocess.Popen([PY, "-m", "conformance", "run", "--report-dir", str(out)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt once a few checks have finished
        line = proc.stdout.readline()
        seen.append(line)
        # the counter is padded to the width of the total ("[  5/103]" past 99 checks)
        if not line or re.search(r"\[\s*5/\d+\]", line):
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + stdout, stderr), out


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_run_writes_reports_that_say_so(signame, code, tmp_path):
    import re
    import signal

    import jsonschema

    r, out = _interrupt(tmp_path, getattr(signal, signame))
    assert r.returncode == code, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    m = re.search(r"interrupted after (\d+) of (\d+) checks", r.stderr)
    # The signal went after the [5/N] progress line; checks running concurrently when it arrived are
    # dropped (their outcomes frozen), so the count said can be below 5, never 0 nor the whole run.
    assert m and 1 <= int(m.group(1)) < int(m.group(2)), r.stderr
    assert signame in r.stderr and len(r.stderr.strip().splitlines()) == 1
    said = m.group(0)
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, json.loads((ROOT / "schemas" / "report.schema.json").read_text()))
    assert doc["interrupted"]["message"] == said and doc["interrupted"]["signal"] == signame
    assert doc["summary"]["exit_code"] == code
    for name in ("junit.xml", "report.md", "report.html", "summary.md"):
        assert said in (out / name).read_text(), name
    # The rules never reached do not pretend to have been evaluated.
    not_run = [x for x in doc["rules"] if x["reason"].startswith("not run: interrupted")]
    assert not_run and all(x["verdict"] == "SKIP" for x in not_run)


def test_a_finished_run_has_no_interrupted_field_set(tmp_path):
    from conftest import run_kit
    from reference_server import create_app

    report = run_kit(create_app(str(tmp_path / "a.db")), rules=["CORE-01"], report_dir=str(tmp_path / "r"))
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report.interrupted is None and doc["interrupted"] is None and report.exit_code() == 0


# -- report dir, pipes, version, serve, init ----------------------------------------

def test_an_unwritable_report_dir_is_exit_2_before_any_request(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    # The target is unreachable: had a request been sent, the exit code would be 3.
    r = cli("run", "http://127.0.0.1:9", "--report-dir", str(blocker / "reports"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot write reports" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([PY, "-m", "pytest", "-p", "conformance.plugin", "--pyargs", "conformance", "--target",
                        "http://127.0.0.1:9", "--report-dir", str(blocker / "reports"), "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "cannot write reports" in r.stdout + r.stderr


def test_rules_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{PY} -m conformance rules -v | head -2", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_run_into_a_closed_pipe_finishes_the_run(tmp_path):
    r = subprocess.run(f"{PY} -m conformance run --rule CORE-01,CORE-02,HTTP-01 --report-dir {tmp_path}/r | head -1;"
                       " echo rc=${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
                       text=True, timeout=120)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert "rc=0" in r.stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["summary"]["exit_code"] == 0


def test_version():
    from conformance._engine import tool_version

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"batchspec {tool_version()}"


def test_serve_help_shows_defaults_and_serve_prints_its_url(tmp_path):
    import socket
    import time

    h = cli("serve", "--help")
    assert "(default: 8000)" in h.stdout and "(default: 127.0.0.1)" in h.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PY, "-m", "conformance", "serve", "--port", str(port), "--db", str(tmp_path / "x.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_init_header_names_the_file_written(tmp_path):
    r = cli("init", "my-api.yaml", cwd=tmp_path)
    assert r.returncode == 0
    head = "\n".join((tmp_path / "my-api.yaml").read_text().splitlines()[:3])
    assert "batchspec run --profile my-api.yaml" in head and "batchspec.yaml" not in head


# -- verdict line, colour, progress ---------------------------------------------------

def test_a_waived_must_is_never_every_must_passed(tmp_path):
    from _two_failures import BROKEN, day, run_two_failures

    from conformance.cli import _verdict_line

    report = run_two_failures(tmp_path, [{"rule": r, "reason": "known", "expires": day(30)} for r in BROKEN])
    assert report.exit_code() == 0
    line = _verdict_line(report)
    assert line.endswith("except 2 waived (CORE-07, CORE-08)"), line


@pytest.mark.parametrize("env, colored", [({"FORCE_COLOR": "1"}, True), ({}, False),
                                          ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False)])
def test_force_color_and_no_color(env, colored, monkeypatch):
    import io

    from conformance import cli as cli_mod

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ("\033[" in cli_mod._paint("PASS", "PASS", io.StringIO())) is colored


def test_progress_lines_count_and_rob01_ticks_while_it_fuzzes(tmp_path):
    r = cli("run", "--rule", "CORE-01,ROB-01", "--report-dir", str(tmp_path / "r"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    counted = [ln for ln in lines if "] PASS" in ln]
    assert counted and counted[0].lstrip().startswith("[1/") and counted[-1].lstrip().startswith(f"[{len(counted)}/")
    assert any("ROB-01 fuzzing" in ln and "cases sent" in ln for ln in lines), r.stdout[-3000:]


# -- -x / --maxfail -------------------------------------------------------------------

@pytest.mark.parametrize("maxfail, fails", [(1, 1), (2, 2)])
def test_maxfail_stops_the_run(maxfail, fails, tmp_path):
    from _two_failures import run_two_failures

    report = run_two_failures(tmp_path, maxfail=maxfail)
    got = [r.id for r in report.rules if r.verdict.value == "FAIL"]
    assert len(got) == fails, got
    assert report.exit_code() == 1
    if maxfail == 1:
        assert any("stopped at the first FAIL" in n for n in report.notes)
        assert any(r.reason.startswith("not run: stopped") for r in report.rules)


def test_cli_exitfirst_flag_is_there():
    from conformance.cli import parser

    assert parser().parse_args(["run", "-x"]).exitfirst
    assert parser().parse_args(["run", "--maxfail", "3"]).maxfail == 3


# -- waivers file errors name their line and suggest ---------------------------------

@pytest.mark.parametrize("text, says", [
    ("waivers:\n  - rule: CORE-07\n    reason: known\n    expires: 2030-01-01\n"
     "  - rule: CORE-7\n    reason: typo\n    expires: 2030-01-01\n", "entry 2 (line 5): unknown rule 'CORE-7'; did you mean 'CORE-07'?"),
    ("- rule: CORE-07\n  reason: known\n  expirse: 2030-01-01\n", "(line 3): unknown key 'expirse'; did you mean 'expires'?"),
    ("- rule: CORE-07\n  reason: known\n  expires: 2030-13-01\n", "(line 3): expires must be a date"),
    ("waivers:\n  - rule: [x\n", "(line 3): not valid YAML"),
])
def test_waiver_errors_name_the_line_and_suggest(text, says, tmp_path):
    f = tmp_path / "waivers.yaml"
    f.write_text(text)
    r = cli("run", "http://127.0.0.1:9", "--waivers", str(f), "--report-dir", str(tmp_path / "r"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- curl replays of large bodies run from the report dir -------------------------------

def test_curl_replay_of_a_large_body_runs_from_the_report_dir(tmp_path):
    import os
    import re

    from conftest import run_kit_socket
    from reference_server import create_app

    out = tmp_path / "r"
    # --evidence all: a passing rule keeps its exchanges in report.json (by default they are summarised).
    run_kit_socket(create_app(str(tmp_path / "a.db")), rules=["SIZE-02"], report_dir=str(out), evidence="all")
    doc = json.loads((out / "report.json").read_text())
    replays = [e for r in doc["rules"] for e in r["evidence"] if "@bodies/" in (e["curl"] or "")]
    assert replays, "no large body in the evidence"
    ex = replays[0]
    name = re.search(r"@(bodies/[0-9a-f]+\.body)", ex["curl"]).group(1)
    assert (out / name).is_file()
    assert f"body of {(out / name).stat().st_size} bytes" in ex["curl"]
    # Replay it as a reader of the report would (its server is gone: start the reference server again).
    from reference_server import start_in_thread

    with start_in_thread(db_path=str(tmp_path / "b.db")) as server:
        recorded = re.match(r"https?://[^/]+", ex["request"]["url"]).group(0)
        line = ex["curl"].split(" # ")[0].replace(recorded, server.base_url)
        env = dict(os.environ, BATCHSPEC_AUTHORIZATION="Bearer batchspec-client-a")
        r = subprocess.run(line + " -o /dev/null -w '%{http_code}'", shell=True, cwd=out, env=env,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(ex["response"]["status"])
    assert not [p for p in (out / "bodies").iterdir() if p.name not in (out / "report.json").read_text()]


# -- init --from-openapi ----------------------------------------------------------------

def test_init_from_the_reference_servers_openapi_drafts_a_profile_that_passes(tmp_path):
    import yaml

    from reference_server import start_in_thread

    with start_in_thread(db_path=str(tmp_path / "ref.db")) as server:
        r = cli("init", "--from-openapi", f"{server.base_url}/openapi.json", "drafted.yaml", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        text = (tmp_path / "drafted.yaml").read_text()
        data = yaml.safe_load(text)
        assert data["target"]["base_url"] == server.base_url
        assert data["endpoints"]["batch"] == {"method": "POST", "path": "/orders/batch"}
        assert data["endpoints"]["async"]["path"] == "/imports/batch" and data["endpoints"]["job"]["path"]
        assert data["limits"]["max_items"] == 1000 and data["idempotency"]["header"] == "Idempotency-Key"
        assert {"CORE", "HTTP", "SIZE", "IDEM", "ASYNC", "ATOM"} <= set(data["classes"])
        # Every drafted value says where it came from.
        for line in text.splitlines():
            if re.match(r"\s*(batch|async|max_items|header|valid|classes):", line):
                assert "# guess:" in line or "# stated by x-batch" in line, line
        assert "# TODO: items.invalid" in text
        run = cli("run", "--profile", "drafted.yaml", "-q", "--report-dir", "r", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    passed = {x["class"] for x in doc["rules"] if x["verdict"] == "PASS"}
    assert set(data["classes"]) <= passed


def test_x_batch_states_what_cannot_be_guessed(tmp_path):
    import yaml

    from reference_server import start_in_thread
    from reference_server.openapi import build_openapi
    from reference_server.settings import Settings

    doc = build_openapi(Settings())
    doc["x-batch"]["items"] = {"invalid": [{"item": {"amount": -5, "currency": "USD"}, "code": "invalid_amount",
                                            "field": "amount"}]}
    doc["x-batch"]["classes"] = ["CORE", "PART", "PAR"]
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    r = cli("init", "--from-openapi", "openapi.json", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "p.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["classes"] == ["CORE", "PART", "PAR"] and data["items"]["invalid"][0]["code"] == "invalid_amount"
    assert "stated by x-batch" in text
    with start_in_thread(db_path=str(tmp_path / "ref.db")) as server:
        run = cli("run", server.base_url, "--profile", "p.yaml", "-q", "--report-dir", "r", cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    rules = {x["id"]: x["verdict"] for x in json.loads((tmp_path / "r" / "report.json").read_text())["rules"]}
    assert rules["PART-01"] == "PASS" and rules["PAR-02"] == "PASS"


@pytest.mark.parametrize("content, says", [("{}", "not an OpenAPI document"),
                                           ('{"paths": {"/x": {"get": {}}}}', "no batch endpoint found")])
def test_init_from_an_unusable_document_is_exit_2(content, says, tmp_path):
    (tmp_path / "o.json").write_text(content)
    r = cli("init", "--from-openapi", "o.json", "p.yaml", cwd=tmp_path)
    assert r.returncode == 2 and says in r.stderr and not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("render", ["pytest renders the interrupt", "pytest's rendering fails"])
def test_plain_pytest_interrupted_by_sigterm_writes_reports_and_exits_143(tmp_path, render):
    import os
    import signal
    import time

    from reference_server import start_in_thread

    extra: list[str] = []
    env = dict(os.environ)
    if "fails" in render:
        # What CPython 3.11 did once in the full suite: formatting the interrupted traceback raised
        # (a frame with no line number), which made the run exit 1 instead of 143.
        (tmp_path / "failing_render.py").write_text(
            "def pytest_keyboard_interrupt(excinfo):\n    raise TypeError('tb_lineno is None')\n")
        extra = ["-p", "failing_render"]
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    with start_in_thread(db_path=str(tmp_path / "ref.db")) as server:
        proc = subprocess.Popen([PY, "-m", "pytest", "-p", "conformance.plugin", *extra, "--pyargs", "conformance", "-p",
                                 "no:xdist", "-v", "--target", server.base_url, "--report-dir", str(tmp_path / "r")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline, passed = time.monotonic() + 120, 0
        while time.monotonic() < deadline and passed < 3:
            line = proc.stdout.readline()
            if not line:
                break
            passed += " PASSED" in line
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr[-2000:]
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["interrupted"]["signal"] == "SIGTERM" and "interrupted after" in stderr
