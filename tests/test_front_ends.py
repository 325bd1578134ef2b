"""Issue 15: the CLI and the pytest front end behave like the tools people know."""
from __future__ import annotations

import ast
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
